"""Drop-in replacements for FlashAttention-2's public functions (flash_attn.flash_attn_interface).

Same signatures and semantics: q (batch, seqlen_q, nheads, headdim), k/v (batch, seqlen_k,
nheads_k, headdim) with nheads % nheads_k == 0 (MQA/GQA); varlen tensors packed as
(total, nheads, headdim) with int32 cu_seqlens (batch + 1); causal masks aligned to the
bottom-right corner (causal=True sets the right window edge to 0, whatever window_size[1] says);
window_size=(left, right) with -1 for unbounded; softcap 0 = off; alibi_slopes fp32 (nheads) or
(batch, nheads). With return_attn_probs=True the functions return (out, softmax_lse, None): the
attention probabilities are never materialised (FlashAttention-2 returns them only for testing).
softmax_lse is fp32, (batch, nheads, seqlen_q), or (nheads, total_q) for varlen.

dtypes: fp16 and bf16 on CUDA and CPU; fp32 and fp64 on the CPU only (fp64 computes in fp64 and
returns an fp64 softmax_lse: it is there for torch.autograd.gradcheck). Dropout draws its seed
from torch's default generator (torch.manual_seed makes it reproducible).
"""

from __future__ import annotations

import torch

from . import ops  # registers torch.ops.flashattn.fwd / bwd
from ._ext import FlashAttnError


class _FlashAttnFunc(torch.autograd.Function):
    """out (and lse, when return_lse) = attention(q, k, v); the gradient flows to q, k, v.
    opts = (softmax_scale, causal, window_left, window_right, softcap, dropout_p, max_seqlen_q,
    max_seqlen_k, deterministic, return_lse)."""

    @staticmethod
    def forward(ctx, q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, opts):
        scale, causal, left, right, softcap, dropout_p, max_q, max_k, _, return_lse = opts
        out, lse, seed, rng_state = _forward(q, k, v, scale, causal, left, right, softcap,
                                             dropout_p, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                                             max_q, max_k, True)
        # The backward takes the same path (ctx.eager): plain tensors and no mode here mean the
        # saved tensors are plain too; only the incoming gradient is checked again.
        ctx.eager = rng_state is None
        # The optional tensors are saved only when given (each saved entry costs the backward an
        # unpack).
        extras = (alibi_slopes, cu_seqlens_q, cu_seqlens_k, rng_state)
        ctx.has_extras = any(t is not None for t in extras)
        if ctx.has_extras:
            ctx.save_for_backward(q, k, v, out, lse, *extras)
        else:
            ctx.save_for_backward(q, k, v, out, lse)
        ctx.opts = opts
        ctx.seed = seed
        if not return_lse:
            return out
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, *_):
        if ctx.has_extras:
            q, k, v, out, lse, alibi_slopes, cu_seqlens_q, cu_seqlens_k, rng_state = \
                ctx.saved_tensors
        else:
            q, k, v, out, lse = ctx.saved_tensors
            alibi_slopes = cu_seqlens_q = cu_seqlens_k = rng_state = None
        scale, causal, left, right, softcap, dropout_p, max_q, max_k, deterministic, _ = ctx.opts
        if ctx.eager and ops.eager(dout):
            seed = ctx.seed if rng_state is None else int(rng_state[0])
            dq, dk, dv = ops.backward(dout, q, k, v, out, lse, scale, causal, left, right,
                                      softcap, dropout_p, seed, alibi_slopes, cu_seqlens_q,
                                      cu_seqlens_k, max_q, max_k, None, deterministic)
        else:
            if rng_state is None:
                rng_state = torch.tensor([ctx.seed, 0], dtype=torch.int64)
            dq, dk, dv = torch.ops.flashattn.bwd(
                dout, q, k, v, out, lse, rng_state, scale, causal, left, right, softcap,
                dropout_p, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_q, max_k, None,
                deterministic)
        return dq, dk, dv, None, None, None, None


def _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
               deterministic, return_attn_probs, cu_seqlens_q=None, cu_seqlens_k=None,
               max_seqlen_q=0, max_seqlen_k=0):
    """FlashAttention-2's defaults and rules applied, then the autograd.Function where a gradient
    is wanted, the library's forward alone otherwise (the Function costs ~15 µs a call)."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)
            and isinstance(v, torch.Tensor)):
        _not_tensors(q=q, k=k, v=v)
    scale, left, right = _rules(q, softmax_scale, causal, window_size)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        opts = (scale, bool(causal), left, right, float(softcap), float(dropout_p),
                int(max_seqlen_q), int(max_seqlen_k), bool(deterministic),
                bool(return_attn_probs))
        res = _FlashAttnFunc.apply(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, opts)
        return (*res, None) if return_attn_probs else res
    out, lse, _, _ = _forward(q, k, v, scale, bool(causal), left, right, float(softcap),
                              float(dropout_p), alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                              int(max_seqlen_q), int(max_seqlen_k), return_attn_probs)
    return (out, lse, None) if return_attn_probs else out


def _rules(q, softmax_scale, causal, window_size):
    """FlashAttention-2's defaults and rules: (scale, window left, window right), the scale
    1/sqrt(head_dim) unless given, causal as the right window edge at 0."""
    if softmax_scale is None:
        # (A head dim of 0 is the library's to refuse, with its own message.)
        softmax_scale = q.shape[-1] ** (-0.5) if q.shape[-1] > 0 else 1.0
    left, right = _window(window_size)
    return float(softmax_scale), left, 0 if causal else right


def _forward(q, k, v, scale, causal, left, right, softcap, dropout_p, alibi_slopes, cu_seqlens_q,
             cu_seqlens_k, max_seqlen_q, max_seqlen_k, with_lse, seqused_k=None,
             block_table=None, num_splits=0, leftpad_k=None):
    """The library's forward: straight to the module in plain eager mode, through the custom op
    otherwise (ops.eager). Returns (out, lse, seed, rng_state): the dropout seed drawn on the
    direct path, or the op's rng_state (the other one None)."""
    if ops.eager(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                 leftpad_k):
        seed = ops.draw_seed(q) if dropout_p > 0.0 else 0
        out, lse = ops.forward(q, k, v, scale, causal, left, right, softcap, dropout_p, seed,
                               alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                               max_seqlen_k, seqused_k, with_lse, block_table, num_splits,
                               leftpad_k)
        return out, lse, seed, None
    out, lse, rng_state = torch.ops.flashattn.fwd(
        q, k, v, scale, causal, left, right, softcap, dropout_p, alibi_slopes, cu_seqlens_q,
        cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k, block_table, num_splits, leftpad_k)
    return out, lse, None, rng_state


def _not_tensors(**args):
    for name, t in args.items():
        if not isinstance(t, torch.Tensor):
            raise FlashAttnError(f"flashattn: argument '{name}': expected a torch.Tensor, got "
                                 f"{type(t).__name__} (flashattn._ext takes other DLPack "
                                 "arrays, NumPy's among them)")


def _window(window_size):
    """(left, right) from FlashAttention-2's window_size, or the library's kind of error."""
    try:
        left, right = window_size
        return int(left), int(right)
    except (TypeError, ValueError):
        raise FlashAttnError(
            "flashattn: argument 'window_size': expected a pair (left, right) of ints, -1 for "
            f"unbounded, got {window_size!r}") from None


def _unpack(packed, name: str, dim: int, count: int, layout: str):
    """The `count` tensors packed along `dim` (qkv: 3, kv: 2), or the library's kind of error."""
    if not isinstance(packed, torch.Tensor) or packed.dim() != dim + 3 \
            or packed.shape[dim] != count:
        got = tuple(packed.shape) if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise FlashAttnError(f"flashattn: argument '{name}': expected shape {layout}, got {got}")
    return packed.unbind(dim)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, headdim); k, v: (batch, seqlen_k, nheads_k, headdim).
    Returns out (batch, seqlen_q, nheads, headdim), or (out, softmax_lse, None)."""
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False):
    """qkv: (batch, seqlen, 3, nheads, headdim)."""
    q, k, v = _unpack(qkv, "qkv", 2, 3, "(batch, seqlen, 3, nheads, headdim)")
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, headdim); kv: (batch, seqlen_k, 2, nheads_k, headdim)."""
    k, v = _unpack(kv, "kv", 2, 2, "(batch, seqlen_k, 2, nheads_k, headdim)")
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None):
    """q: (total_q, nheads, headdim); k, v: (total_k, nheads_k, headdim); cu_seqlens_q/k: int32
    (batch + 1). Returns out (total_q, nheads, headdim), or (out, softmax_lse, None) with
    softmax_lse (nheads, total_q).

    block_table int32 (batch, max_pages): k and v are a paged cache (num_pages, page_size,
    nheads_k, headdim), any page_size; sequence i has cu_seqlens_k[i + 1] - cu_seqlens_k[i] keys
    from row 0 of its pages (block_table[i, j // page_size], row j % page_size). Inference only,
    as FlashAttention-2: no gradients flow."""
    if block_table is not None:
        scale, left, right = _rules(q, softmax_scale, causal, window_size)
        with torch.no_grad():
            out, lse, _, _ = _forward(q, k, v, scale, bool(causal), left, right, float(softcap),
                                      float(dropout_p), alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                                      int(max_seqlen_q), int(max_seqlen_k), return_attn_probs,
                                      None, block_table)
        return (out, lse, None) if return_attn_probs else out
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs, cu_seqlens_q, cu_seqlens_k,
                      max_seqlen_q, max_seqlen_k)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False):
    """qkv: (total, 3, nheads, headdim); cu_seqlens: int32 (batch + 1)."""
    q, k, v = _unpack(qkv, "qkv", 1, 3, "(total, 3, nheads, headdim)")
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs, cu_seqlens, cu_seqlens,
                      max_seqlen, max_seqlen)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False):
    """q: (total_q, nheads, headdim); kv: (total_k, 2, nheads_k, headdim)."""
    k, v = _unpack(kv, "kv", 1, 2, "(total_k, 2, nheads_k, headdim)")
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                      alibi_slopes, deterministic, return_attn_probs, cu_seqlens_q, cu_seqlens_k,
                      max_seqlen_q, max_seqlen_k)


# ---- KV cache ----------------------------------------------------------------------------------
def _rotary(x, cos, sin, positions, interleaved: bool):
    """x (batch, seqlen, heads, d) with its first rotary_dim = 2 · cos.shape[1] dims rotated by
    the angles of rows `positions` (batch, seqlen) of cos and sin: pairs (2i, 2i + 1) when
    interleaved (GPT-J), (i, i + rotary_dim / 2) otherwise (GPT-NeoX). Computed in fp32 (fp64 for
    fp64 inputs), rounded once."""
    rd = 2 * cos.shape[1]
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = cos[positions].unsqueeze(2).to(wide)
    s = sin[positions].unsqueeze(2).to(wide)
    xr = x[..., :rd].to(wide)
    if interleaved:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
    else:
        x0, x1 = xr[..., :rd // 2], xr[..., rd // 2:]
        rotated = torch.cat((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return torch.cat((rotated.to(x.dtype), x[..., rd:]), dim=-1)


def _check_append(q, k, v, k_cache, v_cache, lens, block_table, cos, sin):
    """The append's arguments, before anything is written: shapes, and on the CPU in eager mode
    that every sequence's new rows fit in its cache (on CUDA, and under torch.compile, the values
    of cache_seqlens are trusted, as FlashAttention-2 does: reading them would wait for the GPU)."""
    batch, seqlen_new, d = q.shape[0], k.shape[1], q.shape[-1]
    for name, t, cache in (("k", k, k_cache), ("v", v, v_cache)):
        want = (batch, seqlen_new, cache.shape[2], cache.shape[3])
        if tuple(t.shape) != want:
            raise FlashAttnError(f"flashattn: argument '{name}': expected (batch, seqlen_new, "
                                 f"heads_k, d) = {want}, got {tuple(t.shape)}")
    capacity = (block_table.shape[1] * k_cache.shape[1] if block_table is not None
                else k_cache.shape[1])
    if cos is not None:
        rd = 2 * cos.shape[-1] if cos.dim() == 2 else -1
        if cos.dim() != 2 or tuple(sin.shape) != tuple(cos.shape) or not 0 < rd <= d:
            raise FlashAttnError("flashattn: argument 'rotary_cos': expected rotary_cos and "
                                 "rotary_sin of one shape (seqlen_ro, rotary_dim / 2) with "
                                 f"0 < rotary_dim ≤ {d}, got {tuple(cos.shape)} and "
                                 f"{tuple(sin.shape)}")
        if cos.shape[0] < capacity:
            raise FlashAttnError(f"flashattn: argument 'rotary_cos': {cos.shape[0]} positions, "
                                 f"the cache holds {capacity} (seqlen_ro ≥ the cache's length)")
    if not lens.is_cuda and batch > 0 and not torch.compiler.is_compiling():
        end = int((lens.long() + seqlen_new).max())
        if int(lens.min()) < 0 or end > capacity:
            arg = "block_table" if block_table is not None else "cache_seqlens"
            room = (f"{block_table.shape[1]} pages of {k_cache.shape[1]} rows"
                    if block_table is not None else f"{capacity} rows")
            raise FlashAttnError(f"flashattn: argument '{arg}': cache_seqlens + seqlen_new reaches "
                                 f"{end} (least cache_seqlens {int(lens.min())}), the cache holds "
                                 f"{room} a sequence")


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None,
                            block_table=None, softmax_scale=None, causal=False,
                            window_size=(-1, -1), softcap=0.0, rotary_interleaved=True,
                            alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    """FlashAttention-2's flash_attn_with_kvcache: attention of q (batch, seqlen_q, heads, d)
    over a KV cache k_cache, v_cache (batch_cache, seqlen_cache, heads_k, d), inference only.
    k, v (batch, seqlen_new, heads_k, d), if given, are written into the cache in place at rows
    cache_seqlens[i] … of sequence i (cache_batch_idx[i] of the cache, when given) before the
    attention, which then covers cache_seqlens[i] + seqlen_new keys (the whole cache when
    cache_seqlens is None). cache_seqlens: an int or int32 (batch). Rotary embedding (rotary_cos,
    rotary_sin (seqlen_ro, rotary_dim / 2); needs k and v): k at positions cache_seqlens + j, q at
    cache_seqlens + i when causal or local, at cache_seqlens otherwise. Causal and window masks
    are aligned to the bottom-right corner of each sequence's updated cache. Returns out, or
    (out, softmax_lse (batch, heads, seqlen_q)) with return_softmax_lse.

    block_table, int32 (batch, max_pages): a paged cache, k_cache and v_cache (num_pages,
    page_size, heads_k, d) with any page_size; row j of sequence i is row j % page_size of page
    block_table[i, j // page_size]. On CUDA the table is trusted (not read on the host).

    num_splits: the keys split this many ways on CUDA, fp32 partials merged by a combine kernel,
    or in a short eager step by the decode kernel itself (the same bits) (0: the library picks
    to fill the GPU; 1: no split). The CPU ignores it.

    cache_leftpad, int32 (batch): sequence i's cache starts at row cache_leftpad[i] (a
    left-padded cache): the attention covers rows cache_leftpad[i] … of the updated cache, and
    the masks align to those keys; rotary positions stay the rows' indices in the cache (as
    FlashAttention-2). Not with a paged cache.

    The append and the rotary embedding are PyTorch indexing before the library's forward."""
    if block_table is not None and cache_batch_idx is not None:
        raise FlashAttnError("flashattn: argument 'cache_batch_idx': not with a paged cache "
                             "(block_table says where each sequence's rows are)")
    if cache_leftpad is not None and block_table is not None:
        raise FlashAttnError("flashattn: argument 'cache_leftpad': not with a paged cache "
                             "(block_table)")
    if not all(isinstance(t, torch.Tensor) for t in (q, k_cache, v_cache)):
        _not_tensors(q=q, k_cache=k_cache, v_cache=v_cache)
    if (k is None) != (v is None):
        raise FlashAttnError("flashattn: argument 'v': k and v are given together or not at all")
    if (rotary_cos is None) != (rotary_sin is None):
        raise FlashAttnError("flashattn: argument 'rotary_sin': rotary_cos and rotary_sin are "
                             "given together or not at all")
    if rotary_cos is not None and k is None:
        raise FlashAttnError("flashattn: argument 'rotary_cos': rotary embedding needs the new "
                             "keys k and v")
    if q.dim() != 4 or k_cache.dim() != 4:
        raise FlashAttnError("flashattn: argument 'q': expected q (batch, seqlen_q, heads, d) and "
                             f"k_cache (batch_cache, seqlen_cache, heads_k, d), got shapes "
                             f"{tuple(q.shape)} and {tuple(k_cache.shape)}")
    batch, seqlen_q = q.shape[0], q.shape[1]
    seqlen_new = 0 if k is None else k.shape[1]
    scale, left, right = _rules(q, softmax_scale, causal, window_size)
    lens = None
    keys, values = k_cache, v_cache
    # One length for all sequences of a contiguous cache, nothing appended: the caches' first rows
    # as views (no length tensor to make on the device each call).
    plain = k is None and block_table is None and cache_batch_idx is None and cache_leftpad is None
    if isinstance(cache_seqlens, int) and plain and 0 < cache_seqlens <= k_cache.shape[1]:
        keys, values = k_cache[:, :cache_seqlens], v_cache[:, :cache_seqlens]
    elif cache_seqlens is not None:
        if isinstance(cache_seqlens, int):
            lens = torch.full((batch,), cache_seqlens, dtype=torch.int32, device=q.device)
        elif isinstance(cache_seqlens, torch.Tensor) and cache_seqlens.dtype == torch.int32 \
                and cache_seqlens.shape == (batch,):
            lens = cache_seqlens
        else:
            raise FlashAttnError("flashattn: argument 'cache_seqlens': expected an int or an int32 "
                                 f"tensor of shape ({batch},), got {cache_seqlens!r}")
    elif k is not None:
        raise FlashAttnError("flashattn: argument 'cache_seqlens': required with k and v (the row "
                             "at which each sequence's new keys go)")
    if k is not None:
        _check_append(q, k, v, k_cache, v_cache, lens, block_table, rotary_cos, rotary_sin)
        start = lens.long().unsqueeze(1)  # (batch, 1): each sequence's first new row
        ahead = start + torch.arange(seqlen_new, device=q.device)
        if rotary_cos is not None:
            k = _rotary(k, rotary_cos, rotary_sin, ahead, rotary_interleaved)
            local = causal or left >= 0 or right >= 0
            q_pos = (start + torch.arange(seqlen_q, device=q.device) if local
                     else start.expand(batch, seqlen_q))
            q = _rotary(q, rotary_cos, rotary_sin, q_pos, rotary_interleaved)
        if block_table is not None:  # row j of sequence b: page table[b, j // size], j % size
            size = k_cache.shape[1]
            rows = block_table.long().gather(1, torch.div(ahead, size, rounding_mode="floor"))
            ahead = ahead % size
        else:
            rows = (cache_batch_idx if cache_batch_idx is not None
                    else torch.arange(batch, device=q.device)).long().unsqueeze(1)
        k_cache[rows, ahead] = k.to(k_cache.dtype)
        v_cache[rows, ahead] = v.to(v_cache.dtype)
    if cache_batch_idx is not None:
        keys, values = k_cache[cache_batch_idx.long()], v_cache[cache_batch_idx.long()]
    seqused_k = lens if seqlen_new == 0 else lens + seqlen_new  # (int32 stays int32)
    args = (q, keys, values, scale, bool(causal), left, right, float(softcap), 0.0, alibi_slopes,
            None, None, 0, 0, return_softmax_lse, seqused_k, block_table, int(num_splits),
            cache_leftpad)
    if torch.is_grad_enabled():  # (no_grad costs ~2 µs a call: only where grad mode is on)
        with torch.no_grad():
            out, lse, _, _ = _forward(*args)
    else:
        out, lse, _, _ = _forward(*args)
    return (out, lse) if return_softmax_lse else out


def flash_attn_combine(out_partial, lse_partial, out=None, out_dtype=None):
    """Attention over the union of disjoint sets of keys from each set's result (a prefix cache and
    the rest, several devices, splits of the keys): split s gave out_partial[s], normalised over
    its own keys, and its log-sum-exp lse_partial[s]; the result is
    lse = log Σ_s exp(lse_s) and out = Σ_s exp(lse_s − lse) · out_s (lse −inf and out 0 for a row
    that no split saw a key of).

    out_partial fp32 (splits, batch, seqlen, heads, d) with lse_partial fp32
    (splits, batch, heads, seqlen), or the varlen layout (splits, total, heads, d) with
    (splits, heads, total) (the LSE layouts that the forward functions return). Returns (out, lse):
    out (batch, seqlen, heads, d) or (total, heads, d) in out_dtype (default that of out_partial;
    fp16, bf16 or fp32), written into `out` when given; lse fp32 (batch, heads, seqlen) or
    (heads, total)."""
    if not isinstance(out_partial, torch.Tensor) or not isinstance(lse_partial, torch.Tensor):
        _not_tensors(out_partial=out_partial, lse_partial=lse_partial)
    if out_partial.dim() not in (4, 5):
        raise FlashAttnError("flashattn: argument 'out_partial': expected (splits, batch, seqlen, "
                             "heads, d) or (splits, total, heads, d), got shape "
                             f"{tuple(out_partial.shape)}")
    padded = out_partial.dim() == 5
    if padded:  # rows flattened (b · seqlen + i), as the library takes them
        splits, batch, seqlen, heads, d = out_partial.shape
        if tuple(lse_partial.shape) != (splits, batch, heads, seqlen):
            raise FlashAttnError("flashattn: argument 'lse_partial': expected shape "
                                 f"{(splits, batch, heads, seqlen)} (splits, batch, heads, seqlen) "
                                 f"of out_partial, got {tuple(lse_partial.shape)}")
        op = out_partial.reshape(splits, batch * seqlen, heads, d)
        lp = lse_partial.transpose(1, 2).reshape(splits, heads, batch * seqlen)
    else:
        op, lp = out_partial, lse_partial
    if out is None:
        dtype = out_dtype if out_dtype is not None else out_partial.dtype
        out = out_partial.new_empty(out_partial.shape[1:], dtype=dtype)
    elif out_dtype is not None and out.dtype != out_dtype:
        raise FlashAttnError(f"flashattn: argument 'out': dtype {out.dtype}, but out_dtype is "
                             f"{out_dtype}")
    flat = out.view(op.shape[1:]) if padded else out
    lse = op.new_empty((op.shape[2], op.shape[1]), dtype=torch.float32)  # (heads, rows)
    ops._ext.combine(ops._dl(op), ops._dl(lp), ops._dl(flat), ops._dl(lse), 0, ops._stream(op))
    if padded:
        lse = lse.view(heads, batch, seqlen).transpose(0, 1)
    return out, lse
