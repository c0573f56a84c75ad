"""Calls the flashattn C ABI (libflashattn_c.so) on PyTorch tensors through ctypes.

For the benchmarks: it needs no build step beyond the CMake build. The Python package proper
(nanobind, DLPack, torch.library ops) lives in python/flashattn.
"""
import ctypes
import math

import torch

_DTYPES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.int32: 3}


class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("strides", ctypes.c_int64 * 4),
        ("device_type", ctypes.c_int32),
        ("device_id", ctypes.c_int32),
    ]


class Options(ctypes.Structure):
    _fields_ = [
        ("softmax_scale", ctypes.c_float),
        ("causal", ctypes.c_int32),
        ("window_left", ctypes.c_int32),
        ("window_right", ctypes.c_int32),
        ("softcap", ctypes.c_float),
        ("dropout_p", ctypes.c_float),
        ("dropout_seed", ctypes.c_uint64),
        ("dropout_offset", ctypes.c_uint64),
        ("max_seqlen_q", ctypes.c_int64),
        ("max_seqlen_k", ctypes.c_int64),
        ("deterministic", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
    ]


def describe(t):
    if t is None:
        return None
    d = Tensor()
    d.data = t.data_ptr()
    d.dtype = _DTYPES[t.dtype]
    d.rank = t.dim()
    for i in range(t.dim()):
        d.shape[i] = t.shape[i]
        d.strides[i] = t.stride(i)
    d.device_type = 1 if t.is_cuda else 0
    d.device_id = (t.device.index or 0) if t.is_cuda else 0
    return d


class Library:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.flashattn_last_error.restype = ctypes.c_char_p
        self.lib.flashattn_default_options.argtypes = [ctypes.POINTER(Options)]

    def options(self, causal=False, softmax_scale=None, window=(-1, -1), softcap=0.0,
                dropout_p=0.0, seed=0, offset=0, deterministic=False):
        o = Options()
        self.lib.flashattn_default_options(ctypes.byref(o))
        o.causal = int(causal)
        o.softmax_scale = softmax_scale or 0.0
        o.window_left, o.window_right = window
        o.softcap = softcap
        o.dropout_p = dropout_p
        o.dropout_seed = seed
        o.dropout_offset = offset
        o.deterministic = int(deterministic)
        o.stream = torch.cuda.current_stream().cuda_stream
        return o

    def forward_prepared(self, q, k, v, out, lse, options):
        """Returns a zero-argument callable that runs the forward (descriptors built once)."""
        args = [describe(x) for x in (q, k, v, out, lse)]
        ptrs = [ctypes.byref(a) for a in args] + [None, None, None, None, ctypes.byref(options)]
        fn = self.lib.flashattn_forward

        def call():
            if fn(*ptrs) != 0:
                raise RuntimeError(self.lib.flashattn_last_error().decode())

        return call

    def backward_prepared(self, dout, q, k, v, out, lse, dq, dk, dv, options):
        """Returns a zero-argument callable that runs the backward (descriptors built once)."""
        args = [describe(x) for x in (dout, q, k, v, out, lse, dq, dk, dv)]
        ptrs = [ctypes.byref(a) for a in args] + [None, None, None, None, ctypes.byref(options)]
        fn = self.lib.flashattn_backward

        def call():
            if fn(*ptrs) != 0:
                raise RuntimeError(self.lib.flashattn_last_error().decode())

        return call

    def forward(self, q, k, v, causal=False, **kw):
        """q, k, v: (batch, seqlen, heads, head_dim). Returns (out, lse)."""
        out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32, device=q.device)
        self.forward_prepared(q, k, v, out, lse, self.options(causal=causal, **kw))()
        return out, lse


def flops_fwd(batch, heads, seqlen_q, seqlen_k, head_dim, causal):
    """DESIGN §5: 4·b·h·sq·sk·d, halved when causal (FlashAttention's benchmark formula)."""
    f = 4 * batch * heads * seqlen_q * seqlen_k * head_dim
    return f / 2 if causal else f


def flops_bwd(batch, heads, seqlen_q, seqlen_k, head_dim, causal):
    """The backward's five matmuls against the forward's two: 2.5× the forward's count."""
    return 2.5 * flops_fwd(batch, heads, seqlen_q, seqlen_k, head_dim, causal)


__all__ = ["Library", "flops_bwd", "flops_fwd", "math"]
