"""The host path of the CUDA calls (DESIGN §4): CUDA graph capture and replay of a training step
and of a decode step, equal to eager; calls that do not wait for the stream; the backward's
scratch from PyTorch's caching allocator, the split forward's kept per stream. Skipped where there is no GPU or no CUDA kernels."""

import pytest

torch = pytest.importorskip("torch")
flashattn = pytest.importorskip("flashattn")

from flashattn import (  # noqa: E402
    flash_attn_func,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    ops,
)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and flashattn.cuda_compiled()
         and flashattn.cuda_device_count() > 0),
    reason="no CUDA device or no CUDA kernels built")


def _rand(*shape, seed, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(device="cuda", dtype=dtype)


def _capture(step):
    """A CUDA graph of step() (warmed up on a side stream, as autograd needs), and its outputs."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step()
    return graph, outs


def test_graph_training_step_varlen_dropout_equals_eager():
    """fwd + bwd of a varlen batch with dropout, max_seqlen given, deterministic: a replay gives
    the eager call's bits for the seed drawn at capture, on new input values too."""
    lens = [97, 1, 300, 0, 64]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device="cuda")
    total, smax = sum(lens), max(lens)
    q = _rand(total, 8, 64, seed=1).requires_grad_()
    k = _rand(total, 2, 64, seed=2).requires_grad_()
    v = _rand(total, 2, 64, seed=3).requires_grad_()
    dout = _rand(total, 8, 64, seed=4)

    def step():
        # The dropout seed comes from torch's default CPU generator: the same one every step (the
        # CPU generator alone may be reseeded under capture).
        torch.random.default_generator.manual_seed(123)
        out = flash_attn_varlen_func(q, k, v, cu, cu, smax, smax, dropout_p=0.25, causal=True,
                                     deterministic=True)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    with pytest.warns(UserWarning, match="CUDA graph"):
        graph, static = _capture(step)
    for new_values in (False, True):
        if new_values:
            with torch.no_grad():
                for t, seed in ((q, 11), (k, 12), (v, 13)):
                    t.copy_(_rand(*t.shape, seed=seed))
        graph.replay()
        torch.cuda.synchronize()
        eager = step()
        for name, a, b in zip(("out", "dq", "dk", "dv"), static, eager):
            assert torch.equal(a, b), f"{name}: replay differs from eager"
        assert not torch.isnan(static[0]).any()


def test_graph_decode_step_equals_eager():
    """One query token against a cache (GQA 32/8, d 128): replays after the cache and the query
    are updated in place give the eager results."""
    b, cache, hq, hk, d = 4, 1000, 32, 8, 128
    q = _rand(b, 1, hq, d, seed=5)
    k_cache, v_cache = _rand(b, cache, hk, d, seed=6), _rand(b, cache, hk, d, seed=7)

    def step():
        return flash_attn_func(q, k_cache, v_cache, causal=True)

    with torch.inference_mode():
        graph, static = _capture(step)
        for i in range(3):
            q.copy_(_rand(*q.shape, seed=20 + i))
            k_cache[:, -1].copy_(_rand(b, hk, d, seed=30 + i))
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static, step())


def test_graph_paged_kvcache_decode_step_equals_eager():
    """flash_attn_with_kvcache with an append, a paged cache (pages of 16, shuffled) and the split
    forward: replays that advance cache_seqlens in place write each token into the right page and
    give what the same steps give eagerly on a copy of the cache."""
    b, pages_per_seq, page, hq, hk, d = 3, 64, 16, 16, 4, 128
    table = torch.randperm(b * pages_per_seq, device="cuda").view(b, -1).to(torch.int32)
    k_pages = _rand(b * pages_per_seq, page, hk, d, seed=40)
    v_pages = _rand(b * pages_per_seq, page, hk, d, seed=41)
    lens = torch.tensor([15, 300, 1000], dtype=torch.int32, device="cuda")
    q, k, v = _rand(b, 1, hq, d, seed=42), _rand(b, 1, hk, d, seed=43), _rand(b, 1, hk, d, seed=44)
    eager = (k_pages.clone(), v_pages.clone(), lens.clone())

    def step(kp, vp, n):
        return flash_attn_with_kvcache(q, kp, vp, k, v, cache_seqlens=n, block_table=table,
                                       causal=True)

    with torch.inference_mode():
        graph, static = _capture(lambda: step(k_pages, v_pages, lens))
        step(*eager)  # the capture's warm-up appended the same token at lens
        for i in range(3):
            lens.add_(1)
            eager[2].add_(1)
            q.copy_(_rand(*q.shape, seed=50 + i))
            k.copy_(_rand(*k.shape, seed=60 + i))
            graph.replay()
            expected = step(*eager)
            torch.cuda.synchronize()
            assert torch.equal(static, expected)
            assert torch.equal(k_pages, eager[0]) and torch.equal(v_pages, eager[1])


def _busy_stream():
    """Queues ~50 ms of GPU work on the current stream, so that a call that waits for the stream
    cannot return before it is done."""
    torch.cuda.synchronize()
    torch.cuda._sleep(100_000_000)


@pytest.mark.parametrize("varlen", [False, True], ids=["padded", "varlen"])
def test_calls_do_not_wait_for_the_stream(varlen):
    """Forward and backward return while earlier work is still running: no synchronisation and no
    host copy (varlen: cu_seqlens are not read when max_seqlen_q/k are given)."""
    q = _rand(2, 128, 4, 64, seed=8).requires_grad_()
    k = _rand(2, 128, 4, 64, seed=9).requires_grad_()
    v = _rand(2, 128, 4, 64, seed=10).requires_grad_()
    cu = torch.tensor([0, 100, 256], dtype=torch.int32, device="cuda")

    def call():
        if varlen:
            return flash_attn_varlen_func(*(x.view(256, 4, 64) for x in (q, k, v)), cu, cu, 156,
                                          156, causal=True)
        return flash_attn_func(q, k, v, causal=True)

    out = call()  # first call: kernels loaded, shared-memory opt-ins made
    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    _busy_stream()
    out = call()
    assert not torch.cuda.current_stream().query(), "the forward waited for the stream"
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert not torch.cuda.current_stream().query(), "the backward waited for the stream"
    torch.cuda.synchronize()
    assert all(torch.isfinite(g).all() for g in grads)


def test_backward_scratch_from_the_caching_allocator(monkeypatch):
    """The CUDA backward asks the Python layer once for its scratch (from torch's allocator), and
    gives the same bits as with the library's own pool (deterministic mode)."""
    q = _rand(2, 300, 8, 128, seed=14).requires_grad_()
    k = _rand(2, 200, 2, 128, seed=15).requires_grad_()
    v = _rand(2, 200, 2, 128, seed=16).requires_grad_()
    dout = _rand(2, 300, 8, 128, seed=17)
    out = flash_attn_func(q, k, v, causal=True, deterministic=True)
    expected = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

    asked = []
    allocate = ops._workspace_allocator(0)

    def recording(nbytes):
        asked.append(nbytes)
        return allocate(nbytes)

    monkeypatch.setattr(ops, "_workspace_allocator", lambda device: recording)
    got = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    assert len(asked) == 1 and asked[0] > 0
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    # The library's own pool (no allocator given), through the compiled module.
    monkeypatch.setattr(ops, "_workspace_allocator", lambda device: None)
    pooled = torch.autograd.grad(out, (q, k, v), dout)
    for a, b in zip(pooled, expected):
        assert torch.equal(a, b)


def _on_new_stream(fn):
    """fn() on a new stream, ordered after the current stream's work and before its next."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = fn()
    torch.cuda.current_stream().wait_stream(stream)
    return out


def test_split_forward_scratch_kept_per_stream():
    """The split forward's scratch (ops._ForwardScratch): allocated on a stream's first split call
    and reused by the next ones (same bits), replaced by a larger buffer for a call that needs
    more, one per stream, and left alone by a graph capture (which takes the graph's pool). The
    kept buffer is passed as zeroed (Workspace::zeroed): the kernel's split counters, its first
    16384 bytes (cuda/dispatch.h, kSplitCounterBytes), are zero after every call."""
    ops.release_forward_scratch()
    q = _rand(2, 1, 16, 128, seed=70)
    k_cache, v_cache = _rand(2, 2048, 4, 128, seed=71), _rand(2, 2048, 4, 128, seed=72)
    lens = torch.tensor([2048, 1500], dtype=torch.int32, device="cuda")

    def call(splits):
        return flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=lens,
                                       num_splits=splits)

    with torch.inference_mode():
        unsplit = call(1)
        first = call(4)
        scratch = ops._forward_scratches[(q.get_device(), ops._stream(q))]
        address, nbytes = scratch.address, scratch.nbytes
        assert nbytes > 0 and address == scratch.buffer.data_ptr()
        assert torch.equal(call(4), first) and scratch.address == address
        assert torch.equal(call(2), call(2)) and scratch.address == address  # needs less
        more = call(8)
        assert scratch.nbytes > nbytes and scratch.address == scratch.buffer.data_ptr()
        for out in (first, more):
            torch.testing.assert_close(out, unsplit, rtol=0.0, atol=1e-2)
        assert torch.equal(call(4), first)
        torch.cuda.synchronize()
        assert not scratch.buffer[:16384].any()

        assert torch.equal(_on_new_stream(lambda: call(4)), first)
        assert len(ops._forward_scratches) == 2

        kept = {key: (s.address, s.nbytes) for key, s in ops._forward_scratches.items()}
        streams = []

        def step():
            streams.append((ops._stream(q), torch.cuda.is_current_stream_capturing()))
            return call(16)

        graph, static = _capture(step)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static, unsplit, rtol=0.0, atol=1e-2)
        replayed = static.clone()
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static, replayed)
        capture_streams = {stream for stream, capturing in streams if capturing}
        assert len(capture_streams) == 1
        assert (q.get_device(), capture_streams.pop()) not in ops._forward_scratches
        for key, value in kept.items():  # the warm-up ran on a stream of its own
            assert (ops._forward_scratches[key].address, ops._forward_scratches[key].nbytes) \
                == value
        for _ in range(ops._SCRATCH_KEPT_STREAMS + 1):  # a stream a call: at most the cap kept
            assert torch.equal(_on_new_stream(lambda: call(4)), first)
            assert 0 < len(ops._forward_scratches) <= ops._SCRATCH_KEPT_STREAMS
    ops.release_forward_scratch()
    assert not ops._forward_scratches


def _kernels(fn):
    """The names of the CUDA kernels that one call of fn() ran (torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def test_split_decode_step_is_one_kernel_on_the_kept_scratch():
    """Eager, on the kept scratch (zeroed: Workspace::zeroed), the decode kernel merges the splits
    of a short step (here K and V are 32 MiB, the most it takes): one kernel a step. Under graph capture (the graph pool's scratch is not zeroed) the
    combine kernel merges: two. Both equal the unsplit step within rounding."""
    ops.release_forward_scratch()
    q = _rand(1, 1, 32, 128, seed=80)
    k_cache, v_cache = _rand(1, 8192, 8, 128, seed=81), _rand(1, 8192, 8, 128, seed=82)
    lens = torch.tensor([8000], dtype=torch.int32, device="cuda")

    def call(splits=0):
        return flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=lens,
                                       num_splits=splits)

    with torch.inference_mode():
        unsplit = call(1)
        call()  # makes the stream's kept scratch
        names = _kernels(call)
        assert len(names) == 1 and "flash_fwd_kernel" in names[0], names
        torch.testing.assert_close(call(), unsplit, rtol=0.0, atol=1e-2)
        graph, static = _capture(call)
        names = _kernels(graph.replay)
        assert len(names) == 2 and any("combine" in n for n in names), names
        torch.testing.assert_close(static, unsplit, rtol=0.0, atol=1e-2)
    ops.release_forward_scratch()
