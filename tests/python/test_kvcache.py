"""flash_attn_with_kvcache against a float64 reference written here: the append of the new keys
into the cache (in place, at cache_seqlens, through cache_batch_idx), the rotary embedding at the
positions FlashAttention-2 defines, and attention over each sequence's updated cache with every
score option; under DESIGN §4's rule, on the CPU and on CUDA."""

import pytest

torch = pytest.importorskip("torch")
flashattn = pytest.importorskip("flashattn")

from flashattn import flash_attn_with_kvcache  # noqa: E402
from test_interface import (  # noqa: E402
    DEVICE_DTYPES,
    _check,
    _rand,
    check_against_reference,
    ref_attention,
)


def ref_rotary(x, cos, sin, positions, interleaved):
    """The rotary embedding, written out: pairs (2i, 2i + 1) (GPT-J) or (i, i + rd / 2) (NeoX)."""
    rd = 2 * cos.shape[1]
    out = x.clone()
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            c, s = cos[positions[b][t]], sin[positions[b][t]]
            for i in range(rd // 2):
                a, z = (2 * i, 2 * i + 1) if interleaved else (i, i + rd // 2)
                x0, x1 = x[b, t, :, a], x[b, t, :, z]
                out[b, t, :, a] = x0 * c[i] - x1 * s[i]
                out[b, t, :, z] = x0 * s[i] + x1 * c[i]
    return out


def ref_kvcache(q, k_cache, v_cache, k, v, lens, batch_idx, cos, sin, interleaved, causal,
                window_size, leftpad=None, **kw):
    """(out, lse, updated k_cache, updated v_cache), computed in the dtype of q. leftpad: the
    first row of each sequence's keys (rotary positions stay cache rows)."""
    batch, seqlen_q = q.shape[:2]
    new = 0 if k is None else k.shape[1]
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    rows = batch_idx if batch_idx is not None else list(range(batch))
    local = causal or window_size != (-1, -1)
    if cos is not None:
        k = ref_rotary(k, cos, sin, [[lens[b] + j for j in range(new)] for b in range(batch)],
                       interleaved)
        q = ref_rotary(q, cos, sin, [[lens[b] + (i if local else 0) for i in range(seqlen_q)]
                                     for b in range(batch)], interleaved)
    for b in range(batch):
        if k is not None:
            k_cache[rows[b], lens[b]:lens[b] + new] = k[b]
            v_cache[rows[b], lens[b]:lens[b] + new] = v[b]
    outs, lses = [], []
    for b in range(batch):
        used = lens[b] + new
        first = 0 if leftpad is None else leftpad[b]
        slopes = kw.get("alibi_slopes")
        kwb = dict(kw, alibi_slopes=None if slopes is None else
                   (slopes if slopes.dim() == 1 else slopes[b]))
        o, lse = ref_attention(q[b:b + 1], k_cache[rows[b]:rows[b] + 1, first:used],
                               v_cache[rows[b]:rows[b] + 1, first:used], causal=causal,
                               window_size=window_size, **kwb)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses), k_cache, v_cache


CASES = {
    # name: (batch, seqlen_q, seqlen_new, heads, heads_k, d, cache_len, options)
    "decode": (3, 1, 1, 4, 4, 32, 40, dict(causal=True)),
    "decode_gqa_no_append": (2, 1, 0, 8, 2, 32, 33, dict()),
    "prefill_chunk_causal": (2, 5, 5, 4, 2, 24, 30, dict(causal=True)),
    "window_softcap": (2, 3, 3, 2, 1, 16, 50, dict(window_size=(7, 0), softcap=5.0)),
    "alibi_batch_idx": (2, 2, 2, 4, 4, 16, 20, dict(causal=True, alibi=True, batch_idx=True)),
    "rotary_neox": (2, 3, 3, 2, 2, 32, 24, dict(causal=True, rotary=16, interleaved=False)),
    "rotary_gptj_full_dim": (2, 2, 2, 2, 1, 16, 24, dict(rotary=16, interleaved=True)),
    "rotary_not_causal": (1, 4, 4, 2, 2, 32, 16, dict(rotary=8, interleaved=False)),
    "leftpad_rotary_causal": (3, 2, 2, 4, 2, 40, 48, dict(causal=True, rotary=16, leftpad=True)),
    "leftpad_window_batch_idx": (2, 3, 1, 2, 1, 24, 30, dict(window_size=(5, 1), leftpad=True,
                                                             batch_idx=True)),
}


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_kvcache_matches_reference(case, device, dtype):
    batch, seqlen_q, new, h, hk, d, cache_len, opts = CASES[case]
    opts = dict(opts)
    causal = opts.pop("causal", False)
    window = opts.pop("window_size", (-1, -1))
    softcap = opts.pop("softcap", 0.0)
    rotary = opts.pop("rotary", 0)
    interleaved = opts.pop("interleaved", True)
    with_alibi = opts.pop("alibi", False)
    batch_idx = [1, 0] if opts.pop("batch_idx", False) else None
    lens = [cache_len - new - 3 - b for b in range(batch)]  # room left; lengths differ
    # Left padding: sequence b's keys from row 3 · b + 1 (row lens[b] + new - 1, the last, for the
    # last sequence: one key left).
    leftpad = None
    if opts.pop("leftpad", False):
        leftpad = [3 * b + 1 for b in range(batch - 1)] + [lens[-1] + new - 1]
    assert not opts
    q = _rand(batch, seqlen_q, h, d, seed=1)
    k_cache, v_cache = _rand(batch, cache_len, hk, d, seed=2), _rand(batch, cache_len, hk, d, seed=3)
    k = _rand(batch, new, hk, d, seed=4) if new else None
    v = _rand(batch, new, hk, d, seed=5) if new else None
    angles = torch.rand(cache_len, rotary // 2, generator=torch.Generator().manual_seed(6)) * 6
    cos, sin = (angles.cos(), angles.sin()) if rotary else (None, None)
    slopes = (torch.rand(batch, h, generator=torch.Generator().manual_seed(7)) * 0.5).to(device) \
        if with_alibi else None
    lens_t = torch.tensor(lens, dtype=torch.int32, device=device)
    idx_t = None if batch_idx is None else torch.tensor(batch_idx, dtype=torch.int32,
                                                        device=device)
    pad_t = None if leftpad is None else torch.tensor(leftpad, dtype=torch.int32, device=device)
    kept = {}

    def ours(q, kc, vc, *new_kv):
        kn, vn = new_kv if new_kv else (None, None)
        c, s = (None, None) if cos is None else (cos.to(device, q.dtype), sin.to(device, q.dtype))
        out, lse = flash_attn_with_kvcache(
            q, kc, vc, kn, vn, rotary_cos=c, rotary_sin=s, cache_seqlens=lens_t,
            cache_batch_idx=idx_t, causal=causal, window_size=window, softcap=softcap,
            rotary_interleaved=interleaved, alibi_slopes=slopes, cache_leftpad=pad_t,
            return_softmax_lse=True)
        kept["k_cache"], kept["v_cache"] = kc, vc  # updated in place
        return out, lse

    def ref(q, kc, vc, *new_kv):
        kn, vn = new_kv if new_kv else (None, None)
        c, s = (None, None) if cos is None else (cos.to(device, q.dtype), sin.to(device, q.dtype))
        out, lse, kc2, vc2 = ref_kvcache(q, kc, vc, kn, vn, lens, batch_idx, c, s, interleaved,
                                         causal, window, leftpad, softcap=softcap,
                                         alibi_slopes=slopes)
        kept[f"ref_{q.dtype}"] = (kc2, vc2)
        return out, lse

    inputs = [x.to(device) for x in (q, k_cache, v_cache, *((k, v) if new else ()))]
    check_against_reference(ours, ref, inputs, dtype, backward=False)
    # The cache after the call: the new keys (rotated) and values in place, every other row as
    # it was.
    k64, v64 = kept["ref_torch.float64"]
    kp, vp = kept[f"ref_{dtype}"]
    _check(kept["k_cache"], k64, kp, dtype, "k_cache")
    _check(kept["v_cache"], v64, vp, dtype, "v_cache")


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
def test_kvcache_empty_caches(device, dtype):
    """A sequence whose cache is empty (cache_seqlens 0, no append) gets out 0 and LSE -inf, paged
    or not, split or not; the others their attention."""
    q = _rand(2, 1, 4, 32, seed=1, device=device, dtype=dtype)
    kc, vc = (_rand(2, 32, 2, 32, seed=s, device=device, dtype=dtype) for s in (2, 3))
    lens = torch.tensor([0, 9], dtype=torch.int32, device=device)
    kp, table = _paged(kc, 16, torch.Generator().manual_seed(4))
    vp, _ = _paged(vc, 16, torch.Generator().manual_seed(4))
    ref_out, ref_lse = ref_attention(q[1:].double(), kc[1:, :9].double(), vc[1:, :9].double())
    for keys, values, extra in ((kc, vc, {}), (kp, vp, dict(block_table=table))):
        for splits in (1, 3):
            out, lse = flash_attn_with_kvcache(q, keys, values, cache_seqlens=lens,
                                               num_splits=splits, return_softmax_lse=True, **extra)
            assert torch.all(out[0] == 0) and torch.all(lse[0] == float("-inf"))
            tol = 1e-5 if device == "cpu" else 2e-2
            torch.testing.assert_close(out[1:].double(), ref_out, rtol=tol, atol=tol)
            torch.testing.assert_close(lse[1:].double(), ref_lse, rtol=tol, atol=tol)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_kvcache_nan_in_the_cache_poisons_its_kv_heads_rows(num_splits, device, dtype):
    """A NaN key in the cache makes NaN the rows of the query heads of its KV head that see it,
    split or not (the combine keeps a split's NaN); rows past cache_seqlens never see it."""
    q = _rand(2, 1, 4, 32, seed=15, device=device, dtype=dtype)
    kc, vc = (_rand(2, 300, 2, 32, seed=s, device=device, dtype=dtype) for s in (16, 17))
    kc[0, 200, 1, 3] = float("nan")
    lens = torch.tensor([250, 150], dtype=torch.int32, device=device)
    out, lse = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=num_splits,
                                       return_softmax_lse=True)
    assert out[0, 0, 2:].isnan().all() and lse[0, 2:].isnan().all()
    assert torch.isfinite(out[0, 0, :2]).all() and torch.isfinite(out[1]).all()
    kc[1, 200, 0, 0] = float("nan")  # past sequence 1's 150 keys
    out = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=num_splits)
    assert torch.isfinite(out[1]).all()


def test_kvcache_int_seqlens_and_no_append():
    """cache_seqlens as an int; without k and v the cache is left alone."""
    q, kc, vc = _rand(2, 1, 2, 16, seed=1), _rand(2, 12, 2, 16, seed=2), _rand(2, 12, 2, 16, seed=3)
    before = kc.clone()
    out = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=7)
    assert torch.equal(kc, before)
    ref, _ = ref_attention(q.double(), kc[:, :7].double(), vc[:, :7].double())
    assert (out.double() - ref).abs().max().item() < 1e-5


def _paged(cache, page_size, gen):
    """cache (batch, length, heads, d) as pages (num_pages, page_size, heads, d) in a shuffled
    order, plus one spare page, and the block table (batch, length / page_size)."""
    batch, length = cache.shape[:2]
    per_seq = length // page_size
    order = torch.randperm(batch * per_seq + 1, generator=gen)
    pages = torch.zeros(batch * per_seq + 1, page_size, *cache.shape[2:], dtype=cache.dtype,
                        device=cache.device)
    table = order[:batch * per_seq].view(batch, per_seq)
    pages[table.flatten()] = cache.reshape(batch * per_seq, page_size, *cache.shape[2:])
    return pages, table.to(device=cache.device, dtype=torch.int32)


def _unpaged(pages, table):
    batch, per_seq = table.shape
    return pages[table.long().flatten()].reshape(batch, per_seq * pages.shape[1], *pages.shape[2:])


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
@pytest.mark.parametrize("page_size", [1, 3, 16, 64, 256])
@pytest.mark.parametrize("rotary, num_splits", [(0, 0), (8, 0), (0, 1), (0, 5), (0, 1000)])
def test_kvcache_paged_matches_the_contiguous_cache(page_size, rotary, num_splits, device, dtype):
    """A paged cache of any page size gives what the same cache unpaged (and not split) gives: the
    output and LSE, and the new keys and values written into the right rows of the right pages,
    appends crossing a page boundary included (rows 15/16, 511/512, 703/704). num_splits > 1: on
    CUDA the keys split that many ways (1000: more splits than key blocks), the partials merged
    by the combine kernel."""
    batch, seqlen_q, new, h, hk, d, length = 3, 2, 2, 4, 2, 16, 768
    gen = torch.Generator().manual_seed(11)
    q, k, v = (_rand(batch, n, heads, d, seed=s, device=device, dtype=dtype) for n, heads, s in
               ((seqlen_q, h, 1), (new, hk, 4), (new, hk, 5)))
    k_cache, v_cache = (_rand(batch, length, hk, d, seed=s, device=device, dtype=dtype)
                        for s in (2, 3))
    lens = torch.tensor([15, 511, 703], dtype=torch.int32, device=device)
    angles = torch.rand(length, 4, generator=gen) * 6
    rot = (dict(rotary_cos=angles.cos().to(device, dtype), rotary_sin=angles.sin().to(device, dtype))
           if rotary else {})
    kw = dict(cache_seqlens=lens, causal=True, return_softmax_lse=True, **rot)
    kp, table = _paged(k_cache, page_size, torch.Generator().manual_seed(12))
    vp, _ = _paged(v_cache, page_size, torch.Generator().manual_seed(12))
    assert torch.equal(_unpaged(vp, table), v_cache)
    out, lse = flash_attn_with_kvcache(q, kp, vp, k, v, block_table=table, num_splits=num_splits,
                                       **kw)
    kc, vc = k_cache.clone(), v_cache.clone()
    ref_out, ref_lse = flash_attn_with_kvcache(q, kc, vc, k, v, num_splits=1, **kw)
    tol = 1e-5 if device == "cpu" else 2e-3
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(lse, ref_lse, rtol=tol, atol=tol)
    assert torch.equal(_unpaged(kp, table), kc) and torch.equal(_unpaged(vp, table), vc)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
@pytest.mark.parametrize("page_size", [1, 3, 16, 48])
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_paged_matches_the_packed_keys(page_size, causal, device, dtype):
    """flash_attn_varlen_func over a paged cache (a chunked prefill): sequence i's keys are the
    first cu_seqlens_k[i + 1] - cu_seqlens_k[i] rows of its pages, and the result is that of the
    same keys packed as a varlen batch."""
    lens_q, lens_k, h, hk, d, capacity = [3, 0, 7], [10, 4, 41], 4, 2, 24, 48
    cache = [_rand(3, capacity, hk, d, seed=s, device=device, dtype=dtype) for s in (20, 21)]
    kp, table = _paged(cache[0], page_size, torch.Generator().manual_seed(22))
    vp, _ = _paged(cache[1], page_size, torch.Generator().manual_seed(22))
    q = _rand(sum(lens_q), h, d, seed=23, device=device, dtype=dtype)
    cu_q, cu_k = (torch.tensor([0, *torch.tensor(n).cumsum(0).tolist()], dtype=torch.int32,
                               device=device) for n in (lens_q, lens_k))
    k, v = (torch.cat([c[i, :n] for i, n in enumerate(lens_k)]) for c in cache)
    kw = dict(causal=causal, return_attn_probs=True)
    out, lse, _ = flashattn.flash_attn_varlen_func(q, kp, vp, cu_q, cu_k, max(lens_q), max(lens_k),
                                                   block_table=table, **kw)
    ref_out, ref_lse, _ = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q),
                                                           max(lens_k), **kw)
    tol = 1e-5 if device == "cpu" else 2e-3
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(lse, ref_lse, rtol=tol, atol=tol)


def test_varlen_paged_refuses_a_sequence_longer_than_its_pages():
    q, pages = _rand(4, 2, 16, seed=1), _rand(4, 4, 2, 16, seed=2)
    table = torch.tensor([[0, 1]], dtype=torch.int32)  # 8 rows; the sequence has 9 keys
    cu_q, cu_k = (torch.tensor([0, n], dtype=torch.int32) for n in (4, 9))
    with pytest.raises(flashattn.FlashAttnError, match=r"argument 'block_table': holds 2 pages"):
        flashattn.flash_attn_varlen_func(q, pages, pages, cu_q, cu_k, 4, 9, block_table=table)


def test_kvcache_paged_refuses_bad_pages():
    q, k_cache = _rand(2, 1, 2, 16, seed=1), _rand(5, 4, 2, 16, seed=2)
    table = torch.tensor([[0, 1], [2, 5]], dtype=torch.int32)  # page 5 does not exist
    with pytest.raises(flashattn.FlashAttnError, match=r"argument 'block_table': entry \(1, 1\)"):
        flash_attn_with_kvcache(q, k_cache, k_cache, cache_seqlens=3, block_table=table)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(block_table=torch.zeros(2, 1, dtype=torch.int32),
          cache_batch_idx=torch.zeros(2, dtype=torch.int32)), flashattn.FlashAttnError,
     "cache_batch_idx"),
    (dict(cache_leftpad=torch.zeros(2, dtype=torch.int32), block_table=torch.zeros(2, 1, dtype=torch.int32)),
     flashattn.FlashAttnError, "argument 'cache_leftpad'"),
    (dict(cache_seqlens=3, cache_leftpad=torch.tensor([0, 13], dtype=torch.int32)),
     flashattn.FlashAttnError, r"argument 'leftpad_k': entry 1 is 13"),
    (dict(k=_rand(2, 1, 2, 16)), flashattn.FlashAttnError, "argument 'v'"),
    (dict(k=_rand(2, 1, 2, 16), v=_rand(2, 1, 2, 16)), flashattn.FlashAttnError,
     "argument 'cache_seqlens': required"),
    (dict(cache_seqlens=torch.tensor([1, 2])), flashattn.FlashAttnError,
     "argument 'cache_seqlens': expected an int or an int32"),
    (dict(cache_seqlens=3, rotary_cos=torch.ones(12, 4), rotary_sin=torch.ones(12, 4)),
     flashattn.FlashAttnError, "argument 'rotary_cos'"),
    (dict(cache_seqlens=3, num_splits=-1), flashattn.FlashAttnError, "argument 'num_splits'"),
    # Appends that do not fit: nothing is written (the test checks the caches below).
    (dict(k=_rand(2, 2, 2, 16), v=_rand(2, 2, 2, 16), cache_seqlens=11), flashattn.FlashAttnError,
     r"argument 'cache_seqlens': cache_seqlens \+ seqlen_new reaches 13 .* holds 12 rows"),
    (dict(k=_rand(2, 1, 2, 16), v=_rand(2, 1, 2, 16), cache_seqlens=torch.tensor(
        [-1, 0], dtype=torch.int32)), flashattn.FlashAttnError, "argument 'cache_seqlens'"),
    (dict(k=_rand(2, 1, 2, 16), v=_rand(2, 1, 1, 16), cache_seqlens=3), flashattn.FlashAttnError,
     r"argument 'v': expected \(batch, seqlen_new, heads_k, d\) = \(2, 1, 2, 16\)"),
    (dict(k=_rand(2, 1, 2, 16), v=_rand(2, 1, 2, 16), cache_seqlens=3,
          rotary_cos=torch.ones(11, 4), rotary_sin=torch.ones(11, 4)), flashattn.FlashAttnError,
     r"argument 'rotary_cos': 11 positions, the cache holds 12"),
    (dict(k=_rand(2, 1, 2, 16), v=_rand(2, 1, 2, 16), cache_seqlens=3,
          rotary_cos=torch.ones(12, 9), rotary_sin=torch.ones(12, 9)), flashattn.FlashAttnError,
     r"argument 'rotary_cos': expected .* 0 < rotary_dim ≤ 16"),
])
def test_kvcache_errors_name_the_argument(kwargs, error, match):
    q, kc, vc = _rand(2, 1, 2, 16, seed=1), _rand(2, 12, 2, 16, seed=2), _rand(2, 12, 2, 16, seed=3)
    before = kc.clone(), vc.clone()
    with pytest.raises(error, match=match):
        flash_attn_with_kvcache(q, kc, vc, **kwargs)
    assert torch.equal(kc, before[0]) and torch.equal(vc, before[1])


def test_kvcache_paged_append_past_the_table_names_block_table():
    q, pages = _rand(1, 1, 2, 16, seed=1), _rand(4, 4, 2, 16, seed=2)
    table = torch.tensor([[2, 0]], dtype=torch.int32)  # 8 rows
    k = _rand(1, 2, 2, 16, seed=3)
    with pytest.raises(flashattn.FlashAttnError,
                       match=r"argument 'block_table': .* reaches 9 .* holds 2 pages of 4 rows"):
        flash_attn_with_kvcache(q, pages, pages.clone(), k, k, cache_seqlens=7, block_table=table)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
@pytest.mark.parametrize("paged", [False, True])
def test_kvcache_under_torch_compile(paged, device, dtype):
    """A decode step (append with rotary, attend) compiles with fullgraph=True and gives the eager
    step's output and cache, paged or not."""
    batch, h, hk, d, length = 2, 4, 2, 32, 48
    q = _rand(batch, 1, h, d, seed=30, device=device, dtype=dtype)
    k, v = (_rand(batch, 1, hk, d, seed=s, device=device, dtype=dtype) for s in (31, 32))
    caches = [_rand(batch, length, hk, d, seed=s, device=device, dtype=dtype) for s in (33, 34)]
    angles = torch.rand(length, 8, generator=torch.Generator().manual_seed(35)) * 6
    cos, sin = angles.cos().to(device, dtype), angles.sin().to(device, dtype)
    lens = torch.tensor([7, 40], dtype=torch.int32, device=device)
    table = None
    if paged:
        gen = torch.Generator().manual_seed(36)
        (kp, table), (vp, _) = _paged(caches[0], 16, gen), _paged(caches[1], 16, gen.manual_seed(36))
        caches = [kp, vp]

    def step(q, k, v, kc, vc):
        return flash_attn_with_kvcache(q, kc, vc, k, v, rotary_cos=cos, rotary_sin=sin,
                                       cache_seqlens=lens, block_table=table, causal=True,
                                       return_softmax_lse=True)

    eager_caches = [c.clone() for c in caches]
    out, lse = step(q, k, v, *eager_caches)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    c_out, c_lse = compiled(q, k, v, *caches)
    torch.testing.assert_close(c_out, out)
    torch.testing.assert_close(c_lse, lse)
    assert torch.equal(caches[0], eager_caches[0]) and torch.equal(caches[1], eager_caches[1])
