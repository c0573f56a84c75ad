"""flashattn: exact attention with the FlashAttention-2 algorithm (C++/CUDA library).

Layers:

* ``flashattn._ext`` (compiled, nanobind): ``forward`` and ``backward`` over DLPack tensors
  (torch tensors, NumPy arrays, anything with ``__dlpack__``), on the CPU or a CUDA device. It
  links no PyTorch. Errors of the library are raised as :class:`FlashAttnError` (a
  ``RuntimeError``) with the library's message.
* The PyTorch layer (needs ``torch >= 2.4``, imported on first use): the drop-in functions of
  FlashAttention-2 (``flash_attn_func`` and the packed and varlen variants), built on the custom
  ops ``torch.ops.flashattn.fwd`` / ``torch.ops.flashattn.bwd`` (with fake kernels, so that
  ``torch.compile(fullgraph=True)`` traces through them).
* ``flashattn.integrations.transformers``: one-line registration as an attention implementation
  of Hugging Face transformers.

dtypes: fp16 and bf16 on the CPU and CUDA; fp32 and fp64 on the CPU (fp64 computes in fp64, for
``torch.autograd.gradcheck``).
"""

from ._ext import (  # noqa: F401
    FlashAttnError,
    __version__,
    cuda_compiled,
    cuda_device_count,
    dropout_keep,
    dropout_offset_increment,
)
from . import _ext  # noqa: F401

_TORCH_API = (
    "flash_attn_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_with_kvcache",
    "flash_attn_combine",
)

__all__ = [
    "FlashAttnError",
    "__version__",
    "cuda_compiled",
    "cuda_device_count",
    "dropout_keep",
    "dropout_offset_increment",
    *_TORCH_API,
]


def __getattr__(name):
    # The torch layer is imported on first use, so that `import flashattn` works without torch.
    if name in _TORCH_API or name in ("ops", "interface"):
        import importlib

        interface = importlib.import_module(".interface", __name__)
        if name == "interface":
            return interface
        if name == "ops":
            return importlib.import_module(".ops", __name__)
        return getattr(interface, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
