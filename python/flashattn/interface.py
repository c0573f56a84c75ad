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
        # The backward takes the same path (ctx.eager): plain tensors and no mode here mean the
        # saved tensors are plain too; only the incoming gradient is checked again.
        ctx.eager = ops.eager(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k)
        if ctx.eager:
            seed = ops.draw_seed(q) if dropout_p > 0.0 else 0
            out, lse = ops.forward(q, k, v, scale, causal, left, right, softcap, dropout_p, seed,
                                   alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_q, max_k, None,
                                   True)
            rng_state = None
        else:
            out, lse, rng_state = torch.ops.flashattn.fwd(
                q, k, v, scale, causal, left, right, softcap, dropout_p, alibi_slopes,
                cu_seqlens_q, cu_seqlens_k, max_q, max_k, None)
            seed = None
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
    if softmax_scale is None:
        # (A head dim of 0 is the library's to refuse, with its own message.)
        softmax_scale = q.shape[-1] ** (-0.5) if q.shape[-1] > 0 else 1.0
    left, right = _window(window_size)
    if causal:
        right = 0  # as FlashAttention-2: causal is the right window edge at 0
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        opts = (float(softmax_scale), bool(causal), left, right, float(softcap),
                float(dropout_p), int(max_seqlen_q), int(max_seqlen_k), bool(deterministic),
                bool(return_attn_probs))
        res = _FlashAttnFunc.apply(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, opts)
        return (*res, None) if return_attn_probs else res
    args = (float(softmax_scale), bool(causal), left, right, float(softcap),
            float(dropout_p))
    if ops.eager(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k):
        seed = ops.draw_seed(q) if dropout_p > 0.0 else 0
        out, lse = ops.forward(q, k, v, *args, seed, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                               int(max_seqlen_q), int(max_seqlen_k), None, return_attn_probs)
    else:
        out, lse, _ = torch.ops.flashattn.fwd(q, k, v, *args, alibi_slopes, cu_seqlens_q,
                                              cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                                              None)
    return (out, lse, None) if return_attn_probs else out


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


def _no_block_table(block_table):
    if block_table is not None:
        raise NotImplementedError("flashattn: block_table (paged KV cache) is not supported yet")


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
    softmax_lse (nheads, total_q)."""
    _no_block_table(block_table)
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
