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


def _fwd_args(q, softmax_scale, causal, window_size, softcap, dropout_p, max_seqlen_q,
              max_seqlen_k):
    """The scalar arguments of the ops, FlashAttention-2's defaults and rules applied."""
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    window_left, window_right = int(window_size[0]), int(window_size[1])
    if causal:
        window_right = 0  # as FlashAttention-2: causal is the right window edge at 0
    return (float(softmax_scale), bool(causal), window_left, window_right, float(softcap),
            float(dropout_p), int(max_seqlen_q), int(max_seqlen_k))


def _fwd(q, k, v, args, alibi_slopes, cu_seqlens_q, cu_seqlens_k):
    # The op's body directly in plain eager mode, the op itself otherwise (ops.eager).
    op = ops.fwd_impl if ops.eager(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k) \
        else torch.ops.flashattn.fwd
    return op(q, k, v, *args[:6], alibi_slopes, cu_seqlens_q, cu_seqlens_k, *args[6:], None)


class _FlashAttnFunc(torch.autograd.Function):
    """out, lse = attention(q, k, v); the gradient flows to q, k, v."""

    @staticmethod
    def forward(ctx, q, k, v, args, alibi_slopes, cu_seqlens_q, cu_seqlens_k, deterministic):
        out, lse, rng_state = _fwd(q, k, v, args, alibi_slopes, cu_seqlens_q, cu_seqlens_k)
        ctx.save_for_backward(q, k, v, out, lse, rng_state, alibi_slopes, cu_seqlens_q,
                              cu_seqlens_k)
        ctx.args = args
        ctx.deterministic = bool(deterministic)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, rng_state, alibi_slopes, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        scale, causal, left, right, softcap, dropout_p, max_q, max_k = ctx.args
        op = ops.bwd_impl if ops.eager(dout, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                                       cu_seqlens_k) else torch.ops.flashattn.bwd
        dq, dk, dv = op(
            dout, q, k, v, out, lse, rng_state, scale, causal, left, right, softcap, dropout_p,
            alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_q, max_k, None, ctx.deterministic)
        return dq, dk, dv, None, None, None, None, None


def _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
               deterministic, return_attn_probs, cu_seqlens_q=None, cu_seqlens_k=None,
               max_seqlen_q=0, max_seqlen_k=0):
    args = _fwd_args(q, softmax_scale, causal, window_size, softcap, dropout_p, max_seqlen_q,
                     max_seqlen_k)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out, lse = _FlashAttnFunc.apply(q, k, v, args, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                                        deterministic)
    else:
        # Nothing to differentiate: the op alone (the autograd.Function costs ~15 µs a call).
        out, lse, _ = _fwd(q, k, v, args, alibi_slopes, cu_seqlens_q, cu_seqlens_k)
    return (out, lse, None) if return_attn_probs else out


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
    return _attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal,
                      window_size, softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, headdim); kv: (batch, seqlen_k, 2, nheads_k, headdim)."""
    return _attention(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal, window_size,
                      softcap, alibi_slopes, deterministic, return_attn_probs)


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
    return _attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], dropout_p, softmax_scale, causal,
                      window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
                      cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False):
    """q: (total_q, nheads, headdim); kv: (total_k, 2, nheads_k, headdim)."""
    return _attention(q, kv[:, 0], kv[:, 1], dropout_p, softmax_scale, causal, window_size,
                      softcap, alibi_slopes, deterministic, return_attn_probs, cu_seqlens_q,
                      cu_seqlens_k, max_seqlen_q, max_seqlen_k)
