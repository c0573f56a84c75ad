"""The calls into the compiled module, and the torch.library custom ops over them.

``forward`` and ``backward`` are the lean path of the drop-in functions in eager mode: they
allocate the outputs (PyTorch's caching allocator), hand every tensor to the compiled module as
DLPack (no copy) on the caller's current stream, and give the CUDA backward its scratch from
PyTorch's caching allocator too. Everything else (argument checks, defaults, the choice of
kernel) happens once, in C++.

The custom ops ``flashattn::fwd`` and ``flashattn::bwd`` wrap the same two functions, with fake
(meta) kernels, so that ``torch.compile(fullgraph=True)``, ``make_fx`` and tensor subclasses see
ops with known output shapes. Plain eager calls skip them (``eager``): the dispatcher and the
custom-op machinery cost ~40 µs a call, more than the kernel of a decode step.

Layouts: the library refuses a tensor whose layout only (a last dimension that is not
contiguous; for the CUDA kernels an unaligned pointer, outer strides that are not multiples of 8,
a head dim that is not a multiple of 8 or head_dim_v != head_dim) stands in the way, with
``_ext.LayoutError``, before it writes anything. Then, and only then, the call is made again on
packed copies, zero-padded to a common multiple of 8 on CUDA as FlashAttention-2 does, and the
padding is cut from the results.

Dropout: the seed is drawn from torch's default CPU generator (``torch.manual_seed`` makes it
reproducible); the ops carry it to the backward as ``rng_state`` = int64 tensor [seed, offset].
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch
from torch.utils.dlpack import to_dlpack as _to_dlpack

from . import _ext

_RNG_SEED_BOUND = 2**62

# The current stream's handle of a device, as an int: torch's raw getter (what inductor's
# generated code calls, ~0.3 µs) where it exists, torch.cuda.current_stream otherwise (~3 µs).
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(t: torch.Tensor) -> int:
    if not t.is_cuda:
        return 0
    if _raw_stream is not None:
        return _raw_stream(t.get_device())
    return torch.cuda.current_stream(t.device).cuda_stream


def _dl(t: Optional[torch.Tensor]):
    """t as a DLPack capsule for the compiled module. torch.utils.dlpack.to_dlpack is a direct C
    call: 0.2 µs against 2 µs for Tensor.__dlpack__ (Python, with its checks), which nanobind
    would call otherwise. It also takes tensors that require grad (we are below autograd). No
    stream synchronisation is wanted: the kernels run on the current stream."""
    return None if t is None else _to_dlpack(t)


def draw_seed(q: torch.Tensor) -> int:
    """A dropout seed from torch's default CPU generator. Under CUDA graph capture it is drawn
    once, at capture: every replay of the graph then draws the same mask (said by a warning)."""
    if q.is_cuda and torch.cuda.is_current_stream_capturing():
        warnings.warn("flashattn: dropout under CUDA graph capture: the seed is drawn once, at "
                      "capture, so every replay of the graph draws the same dropout mask",
                      stacklevel=3)
    return int(torch.randint(0, _RNG_SEED_BOUND, (1,), dtype=torch.int64).item())


def _lse_dtype(q: torch.Tensor) -> torch.dtype:
    # The library's LSE is fp32, and fp64 for fp64 inputs (computed in fp64 on the CPU).
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _lse_shape(q: torch.Tensor, cu_seqlens_q) -> tuple:
    if cu_seqlens_q is not None:  # varlen: q (total_q, heads, d), lse (heads, total_q)
        return (q.shape[1], q.shape[0])
    return (q.shape[0], q.shape[2], q.shape[1])  # lse (batch, heads, seqlen_q)


@functools.lru_cache(maxsize=None)
def _workspace_allocator(device: int):
    """The CUDA scratch (the backward's, the split forward's partials) from PyTorch's caching
    allocator: stream-ordered on the current stream, and from the graph's private pool under CUDA
    graph capture. One per device, made once."""
    return functools.partial(torch.empty, dtype=torch.uint8, device=torch.device("cuda", device))


# The split forward's scratch is kept between calls up to this size (the split heuristic asks for
# one wave of tiles' rows, under 20 MB on an H200; a larger explicit num_splits gets its scratch a
# call), for up to this many streams (a program that makes a stream a request lets the older
# buffers go).
_SCRATCH_KEPT_BYTES = 64 << 20
_SCRATCH_KEPT_STREAMS = 8


class _ForwardScratch:
    """The split forward's scratch (its fp32 partials) for the calls on one (device, stream) that
    are not being captured: one buffer from PyTorch's caching allocator, kept between calls and
    handed to the library as an address, so that a decode step allocates nothing for it (the
    allocation through the callback cost ~3 µs of a ~35 µs step on the H200's host). It is
    zero-filled when made and passed as Workspace::zeroed, so that the library need not clear
    its split counters a call. The calls
    run in the stream's order, so a call's partials are merged before the next call's kernels
    write them. A call that needs more calls this object (the library's allocate callback): a
    larger buffer, kept in place of the old one up to _SCRATCH_KEPT_BYTES. Under CUDA graph
    capture the scratch comes from the graph's pool instead (_workspace_allocator): a graph
    keeps the addresses it was captured with. release_forward_scratch() lets the buffers go."""

    __slots__ = ("device", "buffer", "address", "nbytes")

    def __init__(self, device: int):
        self.device = device
        self.buffer = None
        self.address = 0
        self.nbytes = 0

    def __call__(self, nbytes: int) -> torch.Tensor:
        buffer = _workspace_allocator(self.device)(nbytes)
        if nbytes <= _SCRATCH_KEPT_BYTES:
            # Zero-filled once, so that later calls may pass it as Workspace::zeroed (the
            # library leaves its split counters zero; this call clears them itself).
            buffer.zero_()
            self.buffer, self.address, self.nbytes = buffer, buffer.data_ptr(), nbytes
        return buffer


_forward_scratches: dict = {}
_is_capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", None)


def _forward_scratch(device: int, stream: int):
    """(allocate callback, kept buffer's address, its bytes) for a forward on (device, stream)."""
    if _is_capturing is None or _is_capturing():
        return _workspace_allocator(device), 0, 0
    scratch = _forward_scratches.get((device, stream))
    if scratch is None:
        if len(_forward_scratches) >= _SCRATCH_KEPT_STREAMS:
            _forward_scratches.clear()
        scratch = _forward_scratches[(device, stream)] = _ForwardScratch(device)
    return scratch, scratch.address, scratch.nbytes


def release_forward_scratch() -> None:
    """Lets the kept split-forward scratch buffers go back to PyTorch's caching allocator (after
    the work queued on their streams, as any tensor freed)."""
    _forward_scratches.clear()


# ---- Packed copies for the layouts the library refuses (LayoutError) ---------------------------
def _kernel_ready(t: torch.Tensor) -> bool:
    stride = t.stride()
    return stride[-1] == 1 and t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in stride[:-1])


def _packed(t: torch.Tensor, width: Optional[int]) -> torch.Tensor:
    """t as the library takes it. CPU (width None): last dimension contiguous. CUDA: last dim
    `width` (zero-padded), aligned, strides % 8 == 0."""
    if width is None:
        return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()
    if t.shape[-1] != width:
        return torch.nn.functional.pad(t, (0, width - t.shape[-1]))
    if _kernel_ready(t):
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)  # canonical strides


def _cut(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t if t.shape[-1] == dim else t[..., :dim].contiguous()


def _width(q: torch.Tensor, v: torch.Tensor) -> Optional[int]:
    """The head dim the CUDA kernels run at (both dims padded to one multiple of 8); None on the
    CPU."""
    return -(-max(q.shape[-1], v.shape[-1]) // 8) * 8 if q.is_cuda else None


# ---- Forward -----------------------------------------------------------------------------------
def forward(q, k, v, softmax_scale: float, causal: bool, window_left: int, window_right: int,
            softcap: float, dropout_p: float, dropout_seed: int, alibi_slopes, cu_seqlens_q,
            cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, seqused_k, with_lse: bool,
            block_table=None, num_splits: int = 0, leftpad_k=None):
    """(out, lse): out (..., head_dim_v) like q; lse (batch, heads, seqlen_q) or (heads, total_q),
    or None when not with_lse (the kernels then skip writing it). block_table: k and v are a
    paged cache (flashattn.h, Options::block_table); num_splits, leftpad_k: Options::num_splits,
    Options::leftpad_k."""
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q), dtype=_lse_dtype(q)) if with_lse else None
    if q.is_cuda:
        stream = _stream(q)
        workspace, buffer, buffer_bytes = _forward_scratch(q.get_device(), stream)
    else:
        stream, workspace, buffer, buffer_bytes = 0, None, 0, 0

    def run(q, k, v):
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        _ext.forward(
            _to_dlpack(q), _to_dlpack(k), _to_dlpack(v), _to_dlpack(out), _dl(lse),
            softmax_scale, causal, window_left, window_right, softcap, _dl(alibi_slopes),
            dropout_p, dropout_seed, 0, _dl(cu_seqlens_q), _dl(cu_seqlens_k), _dl(seqused_k),
            max_seqlen_q, max_seqlen_k, 0, stream, _dl(block_table), num_splits, workspace,
            _dl(leftpad_k), buffer, buffer_bytes, buffer != 0)
        return out

    try:
        return run(q, k, v), lse
    except _ext.LayoutError:
        width = _width(q, v)
        out = run(*(_packed(x, width) for x in (q, k, v)))
        return _cut(out, v.shape[-1]), lse


# ---- Backward ----------------------------------------------------------------------------------
def backward(dout, q, k, v, out, lse, softmax_scale: float, causal: bool, window_left: int,
             window_right: int, softcap: float, dropout_p: float, dropout_seed: int,
             alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int,
             seqused_k, deterministic: bool):
    """(dq, dk, dv), contiguous, with the shapes and dtypes of q, k, v."""
    workspace = _workspace_allocator(q.get_device()) if q.is_cuda else None

    def run(dout, q, k, v, out):
        dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
        _ext.backward(
            _to_dlpack(dout), _to_dlpack(q), _to_dlpack(k), _to_dlpack(v), _to_dlpack(out),
            _to_dlpack(lse), _to_dlpack(dq), _to_dlpack(dk), _to_dlpack(dv), softmax_scale,
            causal, window_left, window_right, softcap, _dl(alibi_slopes), dropout_p,
            dropout_seed, 0, _dl(cu_seqlens_q), _dl(cu_seqlens_k), _dl(seqused_k), max_seqlen_q,
            max_seqlen_k, deterministic, 0, _stream(q), workspace)
        return dq, dk, dv

    try:
        return run(dout, q, k, v, out)
    except _ext.LayoutError:
        width = _width(q, v)
        dq, dk, dv = run(*(_packed(x, width) for x in (dout, q, k, v, out)))
        return _cut(dq, q.shape[-1]), _cut(dk, k.shape[-1]), _cut(dv, v.shape[-1])


# ---- When the ops may be skipped ---------------------------------------------------------------
# Anything that traces or intercepts (torch.compile, make_fx, fake or functional tensors, torch
# function or dispatch modes, tensor subclasses) gets the registered ops, with their fake kernels.
_dispatch_stack_len = getattr(torch._C, "_len_torch_dispatch_stack", None)
_function_mode_on = getattr(torch._C, "_is_torch_function_mode_enabled", None)
_is_compiling = torch.compiler.is_compiling
_Tensor = torch.Tensor


def eager(*tensors: Optional[torch.Tensor]) -> bool:
    """True when forward and backward may be called directly: eager mode, plain tensors, no
    modes."""
    if _dispatch_stack_len is None or _function_mode_on is None:
        return False
    if _is_compiling() or _dispatch_stack_len() != 0 or _function_mode_on():
        return False
    for t in tensors:
        if t is not None and type(t) is not _Tensor:
            return False
    return True


# ---- The custom ops ----------------------------------------------------------------------------
@torch.library.custom_op("flashattn::fwd", mutates_args=())
def fwd(
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
    block_table: Optional[torch.Tensor] = None,
    num_splits: int = 0,
    leftpad_k: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out, lse, rng_state). Shapes: see flashattn.h (padded or varlen)."""
    seed = draw_seed(q) if dropout_p > 0.0 else 0
    out, lse = forward(q, k, v, softmax_scale, causal, window_left, window_right, softcap,
                       dropout_p, seed, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                       max_seqlen_k, seqused_k, True, block_table, num_splits, leftpad_k)
    return out, lse, torch.tensor([seed, 0], dtype=torch.int64)


@fwd.register_fake
def _fwd_fake(q, k, v, softmax_scale, causal, window_left, window_right, softcap, dropout_p,
              alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k,
              block_table=None, num_splits=0, leftpad_k=None):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q), dtype=_lse_dtype(q))
    rng_state = torch.empty((2,), dtype=torch.int64, device="cpu")
    return out, lse, rng_state


@torch.library.custom_op("flashattn::bwd", mutates_args=())
def bwd(
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
    seed = int(rng_state[0]) if dropout_p > 0.0 else 0
    return backward(dout, q, k, v, out, lse, softmax_scale, causal, window_left, window_right,
                    softcap, dropout_p, seed, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                    max_seqlen_q, max_seqlen_k, seqused_k, deterministic)


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, rng_state, softmax_scale, causal, window_left,
              window_right, softcap, dropout_p, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
              max_seqlen_q, max_seqlen_k, seqused_k, deterministic):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))
