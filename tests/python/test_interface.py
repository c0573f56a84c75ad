"""Tests of the Python package: the drop-in functions against a PyTorch reference written here
(forward and gradients), torch.autograd.gradcheck in float64, torch.compile, the custom ops
(opcheck), dropout, errors, NumPy arrays through the compiled module.

Every test runs on the CPU; the same tests run on CUDA tensors where a GPU and the CUDA kernels
are there (skipped otherwise). Forward tests never call the backward, so that the CUDA forward is
tested on its own; the backward tests check the forward too.

Oracle and tolerance (DESIGN.md §4): a naive float64 reference; for each output and gradient,
    max|ours - ref_fp64| <= 2 * max|plain_same_dtype - ref_fp64| + eps
where plain_same_dtype is the same naive reference evaluated in the inputs' dtype.
"""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
flashattn = pytest.importorskip("flashattn")

from flashattn import (  # noqa: E402
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
_SEED_BOUND = 2**62  # as in flashattn/ops.py: the dropout seed is torch.randint(0, 2**62)


def _cuda_ready():
    return torch.cuda.is_available() and flashattn.cuda_compiled() and \
        flashattn.cuda_device_count() > 0


CUDA = pytest.mark.skipif(not _cuda_ready(), reason="no CUDA device or no CUDA kernels built")
# (device, dtype) of the main grids: fp32 on the CPU (its own tests add fp16/bf16/fp64), the
# kernels' fp16 and bf16 on CUDA.
DEVICE_DTYPES = [
    pytest.param("cpu", torch.float32, id="cpu-fp32"),
    pytest.param("cuda", torch.float16, id="cuda-fp16", marks=CUDA),
    pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=CUDA),
]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=CUDA)]
PASSES = ["forward", "backward"]


# ---- Reference ---------------------------------------------------------------------------------
def ref_attention(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                  alibi_slopes=None, dropout_mask=None, dropout_p=0.0):
    """Naive attention in the dtype of q. q (b, sq, h, d), k/v (b, sk, hk, d[v]).
    Returns out (b, sq, h, dv) and lse (b, h, sq)."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq, device=q.device).view(-1, 1)
    j = torch.arange(sk, device=q.device).view(1, -1)
    diag = i + sk - sq  # bottom-right aligned
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype)
        slopes = slopes.view(1, h, 1, 1) if slopes.dim() == 1 else slopes.view(b, h, 1, 1)
        s = s - slopes * (diag - j).abs().to(s.dtype)
    left, right = window_size
    if causal:
        right = 0
    visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        visible &= j >= diag - left
    if right >= 0:
        visible &= j <= diag + right
    s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)  # fully masked rows: p = 0
    if dropout_mask is not None:
        p = p * dropout_mask.to(p.dtype) / (1.0 - dropout_p)
    out = torch.einsum("bhqk,bkhd->bqhd", p.to(v.dtype), v)
    return out, lse


def ref_varlen(q, k, v, cu_q, cu_k, alibi_slopes=None, **kw):
    """The padded reference on each sequence of a varlen batch; lse (h, total_q)."""
    outs, lses = [], []
    for i in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        slopes = alibi_slopes if alibi_slopes is None or alibi_slopes.dim() == 1 \
            else alibi_slopes[i]
        o, lse = ref_attention(q[qs][None], k[ks][None], v[ks][None], alibi_slopes=slopes, **kw)
        outs.append(o[0])
        lses.append(lse[0])
    return torch.cat(outs, 0), torch.cat(lses, 1)


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _check(ours, ref64, plain, dtype, what):
    bound = 2 * _max_err(plain, ref64) + EPS[dtype]
    err = _max_err(ours, ref64)
    assert err <= bound, f"{what}: max error {err:.3g} > bound {bound:.3g}"


def _leaf(x, dtype=None):
    return x.detach().to(dtype or x.dtype).requires_grad_(True)


def _lse_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_against_reference(run_ours, run_ref, inputs, dtype, backward):
    """run_ours(*inputs) and run_ref(*inputs) give (out, lse). Compares out and lse (and, if
    `backward`, the gradients of sum(out * dout)) with the float64 reference; the bound comes from
    the reference evaluated in `dtype`."""
    results = {}
    for name, fn, cast in (("ours", run_ours, dtype), ("ref64", run_ref, torch.float64),
                           ("plain", run_ref, dtype)):
        xs = [_leaf(x, cast) if backward else x.to(cast) for x in inputs]
        out, lse = fn(*xs)
        results[name] = (out, lse, xs)
    (o, lse, _), (o64, lse64, _), (op, lsep, _) = (results[n] for n in ("ours", "ref64", "plain"))
    assert o.dtype == dtype and o.shape == o64.shape and o.device == inputs[0].device
    assert lse.dtype == _lse_dtype(dtype) and lse.shape == lse64.shape
    _check(o, o64, op, dtype, "out")
    finite = torch.isfinite(lse64)
    assert torch.equal(torch.isfinite(lse), finite), "lse: -inf in different places"
    _check(lse[finite], lse64[finite], lsep[finite], dtype, "lse")
    if not backward:
        return
    gen = torch.Generator().manual_seed(7)
    dout = torch.randn(o.shape, generator=gen).to(device=o.device, dtype=dtype)
    grads = {}
    for name, (out, _, xs) in results.items():
        grads[name] = torch.autograd.grad(out, xs, dout.to(out.dtype))
    for i, (a, a64, ap) in enumerate(zip(grads["ours"], grads["ref64"], grads["plain"])):
        assert a.shape == a64.shape and a.dtype == dtype
        _check(a, a64, ap, dtype, f"grad of input {i}")


def _rand(*shape, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def _alibi(kind, batch, heads, device="cpu"):
    if kind is None:
        return None
    shape = (heads,) if kind == "heads" else (batch, heads)
    return (torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 0.5).to(device)


# ---- flash_attn_func ---------------------------------------------------------------------------
CASES = [
    # (batch, seqlen_q, seqlen_k, heads, heads_kv, head_dim, options)
    (2, 8, 8, 4, 4, 16, {}),
    (2, 8, 8, 4, 4, 16, dict(causal=True)),
    (1, 5, 11, 4, 2, 32, dict(causal=True)),
    (1, 11, 5, 4, 1, 32, dict(causal=True)),  # rows with no visible key: out 0, lse -inf
    (2, 9, 13, 4, 2, 16, dict(window_size=(3, 2))),
    (2, 13, 9, 2, 2, 16, dict(window_size=(4, 0))),
    (1, 7, 7, 2, 1, 24, dict(causal=True, window_size=(2, -1))),
    (2, 8, 10, 4, 4, 16, dict(softcap=5.0)),
    (2, 8, 10, 4, 2, 16, dict(alibi="heads", causal=True)),
    (2, 10, 8, 4, 4, 16, dict(alibi="batch_heads")),
    (1, 1, 17, 4, 1, 64, dict(softmax_scale=0.3)),
    (2, 12, 12, 2, 2, 40, dict(softcap=3.0, alibi="heads", window_size=(5, 1))),
    (1, 70, 130, 2, 1, 20, dict(causal=True)),  # head dim 20: the CUDA path pads it to 24
    (2, 65, 65, 2, 2, 64, dict(window_size=(16, 16))),  # several key blocks
]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_flash_attn_func(device, dtype, case, pass_):
    b, sq, sk, h, hk, d, opts = case
    opts = dict(opts)
    alibi = _alibi(opts.pop("alibi", None), b, h, device)
    q = _rand(b, sq, h, d, device=device, seed=1)
    k, v = _rand(b, sk, hk, d, device=device, seed=2), _rand(b, sk, hk, d, device=device, seed=3)

    def ours(q, k, v):
        out, lse, probs = flash_attn_func(q, k, v, alibi_slopes=alibi, return_attn_probs=True,
                                          **opts)
        assert probs is None
        return out, lse

    def ref(q, k, v):
        return ref_attention(q, k, v, alibi_slopes=alibi, **opts)

    check_against_reference(ours, ref, (q, k, v), dtype, pass_ == "backward")


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cpu_dtypes(dtype, pass_):
    q = _rand(2, 9, 4, 32, seed=1)
    k, v = _rand(2, 12, 2, 32, seed=2), _rand(2, 12, 2, 32, seed=3)
    check_against_reference(
        lambda q, k, v: flash_attn_func(q, k, v, causal=True, return_attn_probs=True)[:2],
        lambda q, k, v: ref_attention(q, k, v, causal=True), (q, k, v), dtype,
        pass_ == "backward")


def _dtype(device):
    return torch.float32 if device == "cpu" else torch.bfloat16


@pytest.mark.parametrize("device", DEVICES)
def test_returns_out_only_by_default(device):
    q = _rand(1, 4, 2, 8, device=device, dtype=_dtype(device))
    out = flash_attn_func(q, q, q)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape


@pytest.mark.parametrize("device", DEVICES)
def test_lse_layout(device):
    # softmax_lse as FlashAttention-2 returns it: fp32, (batch, nheads, seqlen_q).
    dt = _dtype(device)
    q, k = _rand(2, 5, 4, 16, device=device, dtype=dt), _rand(2, 7, 2, 16, device=device, dtype=dt)
    out, lse, probs = flash_attn_func(q, k, k, return_attn_probs=True)
    assert lse.shape == (2, 4, 5) and lse.dtype == torch.float32 and probs is None
    _, ref_lse = ref_attention(q.double(), k.double(), k.double())
    torch.testing.assert_close(lse.double(), ref_lse, rtol=0, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_causal_ignores_right_window(device):
    # FlashAttention-2: causal=True sets the right edge of the window to 0, whatever is given.
    dt = _dtype(device)
    q, k = _rand(1, 9, 2, 16, device=device, dtype=dt), _rand(1, 12, 2, 16, device=device, dtype=dt)
    a = flash_attn_func(q, k, k, causal=True, window_size=(3, 5))
    b = flash_attn_func(q, k, k, causal=True, window_size=(3, 0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows(device):
    # seqlen_q > seqlen_k, causal (bottom-right): the first rows see no key.
    dt = _dtype(device)
    q, k = _rand(1, 6, 2, 8, device=device, dtype=dt), _rand(1, 2, 2, 8, device=device, dtype=dt)
    out, lse, _ = flash_attn_func(q, k, k, causal=True, return_attn_probs=True)
    assert torch.all(out[:, :4] == 0) and torch.all(lse[:, :, :4] == float("-inf"))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", DEVICES)
def test_nan_propagates_to_the_rows_it_touches(device):
    """As in plain attention: a NaN in q makes its own row's out and LSE NaN; a NaN in k makes
    NaN every row that sees that key, in the query heads of its KV head (causal here: rows
    i + 3 ≥ 5); every other row stays finite. The backward agrees: dq of the NaN row is NaN."""
    dt = _dtype(device)
    q = _rand(2, 9, 4, 16, device=device, dtype=dt, seed=1)
    k, v = (_rand(2, 12, 2, 16, device=device, dtype=dt, seed=s) for s in (2, 3))
    q[0, 3, 1, 5] = float("nan")
    k[1, 5, 0, 7] = float("nan")
    q.requires_grad_(True)
    out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    bad = torch.zeros(2, 9, 4, dtype=torch.bool, device=device)
    bad[0, 3, 1] = True
    bad[1, 2:, 0:2] = True
    lse = lse.transpose(1, 2)  # (batch, seqlen, heads), as out
    assert out[bad].isnan().all() and lse[bad].isnan().all()
    assert torch.isfinite(out[~bad]).all() and torch.isfinite(lse[~bad]).all()
    (dq,) = torch.autograd.grad(out.float().nan_to_num().sum(), q)
    assert dq[0, 3, 1].isnan().all() and torch.isfinite(dq[0, :3]).all()


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_strided_inputs(device, dtype, pass_):
    # Non-contiguous outer strides go through as views; a non-contiguous last dim is copied.
    base = _rand(2, 8, 4, 3, 16, device=device, seed=1)
    q, k = base[:, :, :, 0], base[:, :, :2, 1]
    v = _rand(2, 8, 16, 2, device=device, seed=2).permute(0, 1, 3, 2)  # last dim stride 2
    assert not q.is_contiguous() and v.stride(-1) != 1
    check_against_reference(
        lambda q, k, v: flash_attn_func(q, k, v, return_attn_probs=True)[:2],
        lambda q, k, v: ref_attention(q, k, v), (q, k, v), dtype, pass_ == "backward")


@CUDA
def test_cuda_misaligned_views():
    # A view whose data pointer is not 16-byte aligned, and odd outer strides: copied for the
    # kernels, same result as the contiguous tensors.
    base = _rand(2 * 9 * 4 * 32 + 3, device="cuda", dtype=torch.float16)
    q = base[3:].view(2, 9, 4, 32)
    k = _rand(2, 9, 4, 33, device="cuda", dtype=torch.float16, seed=2)[..., :32]
    assert q.data_ptr() % 16 != 0 and k.stride(2) % 8 != 0
    torch.testing.assert_close(flash_attn_func(q, k, k), flash_attn_func(q.clone(), k.clone(), k.clone()),
                               rtol=0, atol=0)


@CUDA
def test_cuda_current_stream():
    # The kernels run on the caller's current stream.
    q = _rand(2, 64, 4, 64, device="cuda", dtype=torch.bfloat16)
    expected = flash_attn_func(q, q, q, causal=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = flash_attn_func(q, q, q, causal=True)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(out, expected)


# ---- Packed variants ---------------------------------------------------------------------------
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_qkvpacked(device, dtype, pass_):
    # The gradient flows back into the one packed tensor.
    qkv = _rand(2, 10, 3, 4, 16, device=device)
    check_against_reference(
        lambda qkv: flash_attn_qkvpacked_func(qkv, causal=True, return_attn_probs=True)[:2],
        lambda qkv: ref_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True),
        (qkv,), dtype, pass_ == "backward")


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_kvpacked(device, dtype, pass_):
    q, kv = _rand(2, 7, 4, 16, device=device, seed=1), _rand(2, 12, 2, 2, 16, device=device, seed=2)
    check_against_reference(
        lambda q, kv: flash_attn_kvpacked_func(q, kv, window_size=(3, 3), softcap=4.0,
                                               return_attn_probs=True)[:2],
        lambda q, kv: ref_attention(q, kv[:, :, 0], kv[:, :, 1], window_size=(3, 3), softcap=4.0),
        (q, kv), dtype, pass_ == "backward")


# ---- Varlen ------------------------------------------------------------------------------------
SEQLENS_Q = [3, 0, 9, 1]   # an empty sequence included
SEQLENS_K = [5, 4, 9, 12]


def _cu(seqlens, device="cpu"):
    return torch.tensor([0] + list(torch.tensor(seqlens).cumsum(0)), dtype=torch.int32,
                        device=device)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("opts", [dict(), dict(causal=True), dict(window_size=(2, 1), softcap=2.0),
                                  dict(alibi="batch_heads", causal=True)],
                         ids=["plain", "causal", "window_softcap", "alibi"])
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_varlen(device, dtype, opts, pass_):
    opts = dict(opts)
    h, hk, d = 4, 2, 16
    alibi = _alibi(opts.pop("alibi", None), len(SEQLENS_Q), h, device)
    cu_q, cu_k = _cu(SEQLENS_Q, device), _cu(SEQLENS_K, device)
    q = _rand(sum(SEQLENS_Q), h, d, device=device, seed=1)
    k = _rand(sum(SEQLENS_K), hk, d, device=device, seed=2)
    v = _rand(sum(SEQLENS_K), hk, d, device=device, seed=3)

    def ours(q, k, v):
        out, lse, _ = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(SEQLENS_Q), max(SEQLENS_K),
                                             alibi_slopes=alibi, return_attn_probs=True, **opts)
        assert lse.shape == (h, sum(SEQLENS_Q))  # FlashAttention-2's (nheads, total_q)
        return out, lse

    check_against_reference(
        ours, lambda q, k, v: ref_varlen(q, k, v, cu_q.tolist(), cu_k.tolist(), alibi_slopes=alibi,
                                         **opts),
        (q, k, v), dtype, pass_ == "backward")


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_varlen_qkvpacked(device, dtype, pass_):
    seqlens = [4, 7, 1]
    cu = _cu(seqlens, device)
    qkv = _rand(sum(seqlens), 3, 2, 16, device=device)
    check_against_reference(
        lambda qkv: flash_attn_varlen_qkvpacked_func(qkv, cu, max(seqlens), causal=True,
                                                     return_attn_probs=True)[:2],
        lambda qkv: ref_varlen(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu.tolist(), cu.tolist(),
                               causal=True),
        (qkv,), dtype, pass_ == "backward")


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_varlen_kvpacked(device, dtype, pass_):
    cu_q, cu_k = _cu(SEQLENS_Q, device), _cu(SEQLENS_K, device)
    q = _rand(sum(SEQLENS_Q), 4, 16, device=device, seed=1)
    kv = _rand(sum(SEQLENS_K), 2, 1, 16, device=device, seed=2)
    check_against_reference(
        lambda q, kv: flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, max(SEQLENS_Q),
                                                      max(SEQLENS_K), causal=True,
                                                      return_attn_probs=True)[:2],
        lambda q, kv: ref_varlen(q, kv[:, 0], kv[:, 1], cu_q.tolist(), cu_k.tolist(),
                                 causal=True),
        (q, kv), dtype, pass_ == "backward")


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_equals_padded(device):
    b, s, h, d = 3, 6, 2, 8
    dt = _dtype(device)
    q, k, v = (_rand(b, s, h, d, device=device, dtype=dt, seed=i) for i in (1, 2, 3))
    cu = _cu([s] * b, device)
    padded = flash_attn_func(q, k, v, causal=True)
    packed = flash_attn_varlen_func(q.reshape(b * s, h, d), k.reshape(b * s, h, d),
                                    v.reshape(b * s, h, d), cu, cu, s, s, causal=True)
    torch.testing.assert_close(packed.view(b, s, h, d), padded, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lens_q, lens_k", [([3, 4], [5, 4]), ([], [])])
def test_varlen_rows_after_the_last_sequence(device, lens_q, lens_k):
    """Packed tensors longer than their sequences (3 spare rows each; with cu_seqlens = [0] every
    row is spare): those rows get out = 0 and LSE −inf, and dq, dk, dv = 0, never the stale
    memory the outputs were allocated over (a NaN-filled block is freed first, for the allocator
    to hand back)."""
    dt = _dtype(device)
    tq, tk = sum(lens_q) + 3, sum(lens_k) + 3
    q = _rand(tq, 4, 16, device=device, dtype=dt, seed=1).requires_grad_(True)
    k, v = (_rand(tk, 2, 16, device=device, dtype=dt, seed=s).requires_grad_(True) for s in (2, 3))
    cu_q, cu_k = _cu(lens_q, device), _cu(lens_k, device)
    torch.full((1 << 16,), float("nan"), device=device, dtype=dt)  # freed at once
    out, lse, _ = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q, default=0),
                                         max(lens_k, default=0), causal=True,
                                         return_attn_probs=True)
    end_q, end_k = sum(lens_q), sum(lens_k)
    assert torch.isfinite(out[:end_q]).all()
    assert (out[end_q:] == 0).all() and (lse[:, end_q:] == float("-inf")).all()
    dq, dk, dv = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert (dq[end_q:] == 0).all() and (dk[end_k:] == 0).all() and (dv[end_k:] == 0).all()


# ---- Dropout -----------------------------------------------------------------------------------
def _dropout_mask(seed, offset, p, b, h, sq, sk):
    keep = torch.empty(b, h, sq, sk, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for i in range(sq):
                for j in range(sk):
                    keep[bi, hi, i, j] = flashattn.dropout_keep(seed, offset, p, bi, hi, h, i, j)
    return keep


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_dropout(device, dtype, pass_):
    # The mask is the documented Philox mapping (docs/dropout.md), the same on CPU and GPU.
    b, sq, sk, h, hk, d, p = 2, 6, 7, 2, 1, 16, 0.3
    q = _rand(b, sq, h, d, device=device, seed=1)
    k, v = _rand(b, sk, hk, d, device=device, seed=2), _rand(b, sk, hk, d, device=device, seed=3)
    torch.manual_seed(1234)
    seed = int(torch.randint(0, _SEED_BOUND, (1,), dtype=torch.int64).item())
    keep = _dropout_mask(seed, 0, p, b, h, sq, sk).to(device)
    assert 0 < keep.float().mean() < 1

    def ours(q, k, v):
        torch.manual_seed(1234)  # the op draws its seed from the default generator
        return flash_attn_func(q, k, v, dropout_p=p, causal=True, return_attn_probs=True)[:2]

    check_against_reference(
        ours, lambda q, k, v: ref_attention(q, k, v, causal=True, dropout_mask=keep, dropout_p=p),
        (q, k, v), dtype, pass_ == "backward")


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_seeding(device):
    # Reproducible under torch.manual_seed, different without it.
    q = _rand(2, 16, 2, 16, device=device, dtype=_dtype(device))
    torch.manual_seed(5)
    a = flash_attn_func(q, q, q, dropout_p=0.3)
    torch.manual_seed(5)
    b = flash_attn_func(q, q, q, dropout_p=0.3)
    c = flash_attn_func(q, q, q, dropout_p=0.3)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---- Determinism -------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_backward(device):
    dt = _dtype(device)
    q, k, v = (_leaf(_rand(2, 80, 4, 32, device=device, dtype=dt, seed=s)) for s in (1, 2, 3))
    grads = []
    for _ in range(2):
        out = flash_attn_func(q, k, v, causal=True, deterministic=True)
        grads.append(torch.autograd.grad(out.float().square().sum(), (q, k, v)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# ---- torch.autograd.gradcheck in float64 (CPU) -------------------------------------------------
GRADCHECK_CASES = {
    "plain": (2, 4, 5, 2, 2, 8, {}),
    "causal_gqa": (1, 5, 3, 4, 2, 8, dict(causal=True)),  # includes fully masked rows
    "window": (1, 6, 6, 2, 1, 4, dict(window_size=(1, 2), softmax_scale=0.7)),
    "softcap_alibi": (2, 4, 6, 2, 2, 4, dict(softcap=1.5, alibi="batch_heads", causal=True)),
    "dropout": (1, 4, 5, 2, 2, 4, dict(dropout_p=0.25)),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck_float64(name):
    b, sq, sk, h, hk, d, opts = GRADCHECK_CASES[name]
    opts = dict(opts)
    alibi = _alibi(opts.pop("alibi", None), b, h)
    q = _leaf(_rand(b, sq, h, d, dtype=torch.float64, seed=1))
    k = _leaf(_rand(b, sk, hk, d, dtype=torch.float64, seed=2))
    v = _leaf(_rand(b, sk, hk, d, dtype=torch.float64, seed=3))

    def f(q, k, v):
        torch.manual_seed(0)  # the same dropout mask on every evaluation
        return flash_attn_func(q, k, v, alibi_slopes=alibi, **opts)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_gradcheck_float64_packed_and_varlen():
    seqlens = [3, 0, 4]
    cu = _cu(seqlens)
    qkv = _leaf(_rand(sum(seqlens), 3, 2, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(
        lambda qkv: flash_attn_varlen_qkvpacked_func(qkv, cu, max(seqlens), causal=True), (qkv,))
    kv = _leaf(_rand(2, 5, 2, 1, 4, dtype=torch.float64, seed=2))
    q = _leaf(_rand(2, 3, 2, 4, dtype=torch.float64, seed=3))
    assert torch.autograd.gradcheck(lambda q, kv: flash_attn_kvpacked_func(q, kv), (q, kv))


# ---- torch.compile and the custom ops ----------------------------------------------------------
class _Block(torch.nn.Module):
    def __init__(self, dim=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x, attn):
        b, s, dim = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, dim // self.heads)
        out = attn(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)
        return x + self.proj(out.reshape(b, s, dim))


def _sdpa(q, k, v, causal):
    return torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal).transpose(1, 2)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device, backend, pass_):
    # A small attention block compiles with fullgraph=True (no graph break at the custom ops) and
    # computes what it computes eagerly with SDPA, gradients included.
    torch.manual_seed(0)
    dt = _dtype(device)
    block = _Block().to(device=device, dtype=dt)
    x = _rand(2, 8, 64, device=device, dtype=dt).requires_grad_(pass_ == "backward")
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    tol = dict(rtol=1e-5, atol=1e-5) if dt == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    with torch.set_grad_enabled(pass_ == "backward"):
        out = compiled(x, flash_attn_func)
        ref = block(x, _sdpa)
    torch.testing.assert_close(out, ref, **tol)
    if pass_ == "backward":
        g = torch.autograd.grad(out.sum(), [x, *block.parameters()])
        g_ref = torch.autograd.grad(ref.sum(), [x, *block.parameters()])
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    # torch.library.opcheck's default checks: schema, autograd registration, fake tensor, and
    # AOT dispatch with dynamic shapes.
    dt = _dtype(device)
    q = _rand(1, 4, 2, 8, device=device, dtype=dt, seed=1)
    k, v = _rand(1, 5, 1, 8, device=device, dtype=dt, seed=2), _rand(1, 5, 1, 8, device=device,
                                                                      dtype=dt, seed=3)
    args = (q, k, v, 8 ** -0.5, True, -1, 0, 0.0, 0.0, None, None, None, 0, 0, None)
    torch.library.opcheck(torch.ops.flashattn.fwd.default, args)
    cu = _cu([4], device)
    vargs = (q[0], k[0], v[0], 8 ** -0.5, True, -1, 0, 0.0, 0.0, None, cu, _cu([5], device), 4, 5,
             None)
    torch.library.opcheck(torch.ops.flashattn.fwd.default, vargs)
    if device == "cpu" or _backward_on_cuda():
        out, lse, rng = torch.ops.flashattn.fwd(*args)
        bargs = (torch.randn_like(out), q, k, v, out, lse, rng, 8 ** -0.5, True, -1, 0, 0.0, 0.0,
                 None, None, None, 0, 0, None, False)
        torch.library.opcheck(torch.ops.flashattn.bwd.default, bargs)


def _backward_on_cuda():
    q = torch.zeros(1, 1, 1, 8, device="cuda", dtype=torch.float16, requires_grad=True)
    try:
        flash_attn_func(q, q, q).sum().backward()
        return True
    except flashattn.FlashAttnError as e:
        if "not built yet" in str(e):
            return False
        raise


# ---- Errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_error_carries_library_message(device):
    dt = _dtype(device)
    q, k = _rand(1, 4, 4, 8, device=device, dtype=dt), _rand(1, 4, 3, 8, device=device, dtype=dt)
    with pytest.raises(flashattn.FlashAttnError) as info:
        flash_attn_func(q, k, k)
    assert isinstance(info.value, RuntimeError)
    assert str(info.value) == ("flashattn::forward: argument 'k': heads_q (4) must be a multiple "
                               "of heads_kv (3)")


def test_error_on_bad_cu_seqlens():
    q = _rand(7, 2, 8)
    cu = torch.tensor([0, 5, 3], dtype=torch.int32)
    with pytest.raises(flashattn.FlashAttnError, match="argument 'cu_seqlens_q': must be "
                                                       "non-decreasing"):
        flash_attn_varlen_func(q, q, q, cu, cu, 5, 5)


@pytest.mark.parametrize("call, match", [
    (lambda q: flash_attn_func(q, q, q, window_size=3), "argument 'window_size': expected a pair"),
    (lambda q: flash_attn_func(q, q, q, window_size=(1, 2, 3)),
     "argument 'window_size': expected a pair"),
    (lambda q: flash_attn_func(q[..., :0], q[..., :0], q[..., :0]), "argument 'q'"),
    (lambda q: flash_attn_qkvpacked_func(q), r"argument 'qkv': expected shape \(batch, seqlen, 3"),
    (lambda q: flash_attn_kvpacked_func(q, q), r"argument 'kv': expected shape \(batch, seqlen_k, 2"),
    (lambda q: flash_attn_varlen_qkvpacked_func(q[0], _cu([4]), 4),
     r"argument 'qkv': expected shape \(total, 3"),
    (lambda q: flash_attn_func(q.numpy(), q, q), "argument 'q': expected a torch.Tensor, got "
                                                 "ndarray"),
    (lambda q: flash_attn_varlen_func(q[0], q[0], q[0], _cu([4]).long(), _cu([4]), 4, 4),
     r"argument 'cu_seqlens_q': dtype int64 is not supported, expected int32 \(torch.cumsum"),
])
def test_malformed_arguments_get_the_library_error(call, match):
    """Each malformed argument gets a FlashAttnError that names it and says what is expected."""
    q = _rand(1, 4, 2, 8)
    with pytest.raises(flashattn.FlashAttnError, match=match):
        call(q)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_refuses_fp32_fp64(dtype):
    q = _rand(1, 4, 2, 8, device="cuda", dtype=dtype)
    with pytest.raises(flashattn.FlashAttnError, match="argument 'q': on device cuda:0 the CUDA "
                                                       "kernels take float16 or bfloat16"):
        flash_attn_func(q, q, q)


# ---- The compiled module alone, with NumPy arrays ----------------------------------------------
@pytest.mark.parametrize("np_dtype", ["float32", "float64"])
def test_numpy_arrays(np_dtype):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 5, 4, 8)).astype(np_dtype)
    k = rng.standard_normal((2, 7, 2, 8)).astype(np_dtype)
    v = rng.standard_normal((2, 7, 2, 8)).astype(np_dtype)
    out = np.empty_like(q)
    lse = np.empty((2, 4, 5), dtype=np_dtype)  # the LSE is float32, float64 for float64 inputs
    flashattn._ext.forward(q, k, v, out, lse, causal=True)
    ref_out, ref_lse = ref_attention(*(torch.from_numpy(x).double() for x in (q, k, v)),
                                     causal=True)
    tol = 1e-5 if np_dtype == "float32" else 1e-12
    assert np.abs(out - ref_out.numpy()).max() < tol
    assert np.abs(lse - ref_lse.numpy()).max() < tol
    with pytest.raises(flashattn.FlashAttnError, match="argument 'out'"):
        flashattn._ext.forward(q, k, v, out[:, :3], lse)
    frozen = np.empty_like(q)
    frozen.flags.writeable = False  # an output must be writable
    with pytest.raises(TypeError):
        flashattn._ext.forward(q, k, v, frozen)


# ---- Hugging Face transformers -----------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_transformers_example(device):
    pytest.importorskip("transformers")
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "hf_llama.py"),
                             "--device", device], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout and result.stdout.count("PASS") == 2


def test_transformers_register_refuses_flash_names():
    pytest.importorskip("transformers")
    from flashattn.integrations import transformers as fa_hf

    with pytest.raises(ValueError, match="contains 'flash'"):
        fa_hf.register("flashattn")
    assert fa_hf.register() == "fa_cpp"


def test_import_without_torch_layer():
    # `import flashattn` loads the compiled module only; the torch layer comes on first use.
    code = ("import sys, flashattn; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(flashattn.__version__, flashattn.cuda_compiled())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == flashattn.__version__
