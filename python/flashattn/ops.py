"""The torch.library custom ops ``flashattn::fwd`` and ``flashattn::bwd``.

Each op allocates its outputs and hands every tensor to the compiled module as DLPack (no copy);
the CUDA stream is the caller's current stream. The fake (meta) kernels give the output shapes,
so that ``torch.compile(fullgraph=True)`` traces the ops without running them or breaking the
graph. Autograd is in interface.py (an autograd.Function over these two ops).

On CUDA tensors the ops also meet the kernels' layout rules, as FlashAttention-2 does, so that any
call that works there works here: head dims that are not a multiple of 8 (or a head_dim_v that
differs from head_dim) are zero-padded and the padding is cut from the results; a tensor whose data
pointer is not 16-byte aligned or whose outer strides are not multiples of 8 is copied.

Dropout: ``fwd`` draws a fresh seed from torch's default CPU generator (so ``torch.manual_seed``
makes it reproducible) and returns it as ``rng_state`` = int64 tensor [seed, offset]; ``bwd``
takes it back and regenerates the same mask (Philox, keyed by seed, offset, batch, head, row,
column; see docs/dropout.md).
"""

from __future__ import annotations

from typing import Optional

import torch

from torch.utils.dlpack import to_dlpack as _to_dlpack

from . import _ext

_RNG_SEED_BOUND = 2**62


# The current stream's handle of a device, as an int: torch's raw getter (what inductor's
# generated code calls, ~0.3 µs) where it exists, torch.cuda.current_stream otherwise (~3 µs).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(t: torch.Tensor) -> int:
    if t.device.type != "cuda":
        return 0
    if _raw_stream is not None:
        return _raw_stream(t.device.index)
    return torch.cuda.current_stream(t.device).cuda_stream


def _dl(t: Optional[torch.Tensor]):
    """t as a DLPack capsule for the compiled module. torch.utils.dlpack.to_dlpack is a direct C
    call: 0.2 µs against 2 µs for Tensor.__dlpack__ (Python, with its checks), which nanobind
    would call otherwise; 5 to 9 tensors a call make that ~10 µs of the overhead of a small call.
    It also takes tensors that require grad (the op's inputs may: we are below autograd). No
    stream synchronisation is wanted: the kernels run on the current stream."""
    return None if t is None else _to_dlpack(t)


def _lse_dtype(q: torch.Tensor) -> torch.dtype:
    # The library's LSE is fp32, and fp64 for fp64 inputs (computed in fp64 on the CPU).
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _out_shapes(q, v, cu_seqlens_q):
    out_shape = (*q.shape[:-1], v.shape[-1])
    if cu_seqlens_q is not None:  # varlen: q (total_q, heads, d), lse (heads, total_q)
        lse_shape = (q.shape[1], q.shape[0])
    else:  # q (batch, seqlen_q, heads, d), lse (batch, heads, seqlen_q)
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    return out_shape, lse_shape


# ---- CUDA layout rules -------------------------------------------------------------------------
def _kernel_width(head_dim: int, head_dim_v: int) -> int:
    """The head dim the CUDA kernels run at: both dims padded to one multiple of 8."""
    return -(-max(head_dim, head_dim_v) // 8) * 8


def _kernel_ready(t: torch.Tensor) -> bool:
    stride = t.stride()
    return stride[-1] == 1 and t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in stride[:-1])


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    # The CPU implementation takes any outer strides; only the last dimension must be contiguous.
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def _for_kernel(t: torch.Tensor, width: int) -> torch.Tensor:
    """t as the CUDA kernels take it: last dim `width` (zero-padded), aligned, strides % 8 == 0."""
    if t.shape[-1] != width:
        return torch.nn.functional.pad(t, (0, width - t.shape[-1]))
    if _kernel_ready(t):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)  # canonical strides


def _cut(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t if t.shape[-1] == dim else t[..., :dim].contiguous()


# ---- Eager fast path -----------------------------------------------------------------------------
# A call through torch.ops goes through PyTorch's dispatcher and the custom-op machinery: ~40 µs
# of Python a call on an H100 host (bench/python_overhead.py), more than the kernel of a small
# decode step. In plain eager mode nothing needs them, so the drop-in functions call the ops'
# bodies (fwd_impl, bwd_impl) directly. Anything that traces or intercepts (torch.compile,
# make_fx, fake or functional tensors, torch function or dispatch modes, tensor subclasses) gets
# the registered ops, with their fake kernels.
_dispatch_stack_len = getattr(torch._C, "_len_torch_dispatch_stack", None)
_function_mode_on = getattr(torch._C, "_is_torch_function_mode_enabled", None)


def eager(*tensors: Optional[torch.Tensor]) -> bool:
    """True when the ops' bodies may be called directly: eager mode, plain tensors, no modes."""
    if _dispatch_stack_len is None or _function_mode_on is None:
        return False
    if torch.compiler.is_compiling() or _dispatch_stack_len() != 0 or _function_mode_on():
        return False
    return all(t is None or type(t) is torch.Tensor for t in tensors)


# ---- Forward -----------------------------------------------------------------------------------
def fwd_impl(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    dropout_p: float,
    alibi_slopes: Optional[torch.Tensor],
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    seqused_k: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out, lse, rng_state). Shapes: see flashattn.h (padded or varlen)."""
    _, lse_shape = _out_shapes(q, v, cu_seqlens_q)
    head_dim_v = v.shape[-1]
    if q.device.type == "cuda":
        width = _kernel_width(q.shape[-1], head_dim_v)
        q, k, v = (_for_kernel(x, width) for x in (q, k, v))
    else:
        q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty(lse_shape, dtype=_lse_dtype(q), device=q.device)
    seed = 0
    if dropout_p > 0.0:
        seed = int(torch.randint(0, _RNG_SEED_BOUND, (1,), dtype=torch.int64).item())
    rng_state = torch.tensor([seed, 0], dtype=torch.int64)
    _ext.forward(
        _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse),
        softmax_scale=softmax_scale, causal=causal,
        window_left=window_left, window_right=window_right, softcap=softcap,
        alibi_slopes=_dl(alibi_slopes), dropout_p=dropout_p, dropout_seed=seed, dropout_offset=0,
        cu_seqlens_q=_dl(cu_seqlens_q), cu_seqlens_k=_dl(cu_seqlens_k),
        seqused_k=_dl(seqused_k), max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        stream=_stream(q),
    )
    return _cut(out, head_dim_v), lse, rng_state


fwd = torch.library.custom_op("flashattn::fwd", mutates_args=())(fwd_impl)


@fwd.register_fake
def _fwd_fake(q, k, v, softmax_scale, causal, window_left, window_right, softcap, dropout_p,
              alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k):
    out_shape, lse_shape = _out_shapes(q, v, cu_seqlens_q)
    out = q.new_empty(out_shape)
    lse = q.new_empty(lse_shape, dtype=_lse_dtype(q))
    rng_state = torch.empty((2,), dtype=torch.int64, device="cpu")
    return out, lse, rng_state


# ---- Backward ----------------------------------------------------------------------------------
def bwd_impl(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    rng_state: torch.Tensor,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    dropout_p: float,
    alibi_slopes: Optional[torch.Tensor],
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    seqused_k: Optional[torch.Tensor],
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dq, dk, dv), contiguous, with the shapes and dtypes of q, k, v."""
    head_dim, head_dim_v = q.shape[-1], v.shape[-1]
    if q.device.type == "cuda":
        width = _kernel_width(head_dim, head_dim_v)
        dout, q, k, v, out = (_for_kernel(x, width) for x in (dout, q, k, v, out))
    else:
        dout, q, k, v, out = (_last_dim_contiguous(x) for x in (dout, q, k, v, out))
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    seed, offset = (int(x) for x in rng_state.tolist())
    _ext.backward(
        _dl(dout), _dl(q), _dl(k), _dl(v), _dl(out), _dl(lse), _dl(dq), _dl(dk), _dl(dv),
        softmax_scale=softmax_scale, causal=causal,
        window_left=window_left, window_right=window_right, softcap=softcap,
        alibi_slopes=_dl(alibi_slopes), dropout_p=dropout_p, dropout_seed=seed,
        dropout_offset=offset, cu_seqlens_q=_dl(cu_seqlens_q), cu_seqlens_k=_dl(cu_seqlens_k),
        seqused_k=_dl(seqused_k), max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        deterministic=deterministic, stream=_stream(q),
    )
    return _cut(dq, head_dim), _cut(dk, head_dim), _cut(dv, head_dim_v)


bwd = torch.library.custom_op("flashattn::bwd", mutates_args=())(bwd_impl)


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, rng_state, softmax_scale, causal, window_left,
              window_right, softcap, dropout_p, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
              max_seqlen_q, max_seqlen_k, seqused_k, deterministic):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))
