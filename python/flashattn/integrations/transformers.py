"""flashattn as an attention implementation of Hugging Face transformers (5.x).

One line registers it; then any model that goes through transformers' attention interface (Llama,
Mistral, Qwen, Gemma, ...) can use it::

    import flashattn.integrations.transformers as fa_hf
    fa_hf.register()                                  # attn_implementation="fa_cpp"
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="fa_cpp")

The name holds no "flash": transformers takes every implementation name that contains "flash" for
a FlashAttention kernel to load from the Hub (checked on 5.17 and 5.24), so "flashattn" would fail.

``register`` adds :func:`attention_forward` to ``AttentionInterface`` and, for the masks, the same
mask function transformers uses for FlashAttention-2: the model then hands the attention either
no mask (every token real: plain causal attention) or the 2D padding mask (batch, kv_len), which
is turned into a variable-length batch (cu_seqlens) here. Sliding windows and softcap (Mistral,
Gemma 2) map to window_size and softcap; padding-free packed batches come in through the
``cu_seq_lens_q/k`` and ``max_length_q/k`` keyword arguments, as for FlashAttention-2.

Not supported (a clear error): arbitrary 4D float masks, attention sinks (``s_aux``), returning
attention weights. CUDA tensors must be fp16 or bf16 (the kernels' dtypes); the CPU takes fp32 too.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..interface import flash_attn_func, flash_attn_varlen_func

NAME = "fa_cpp"


def register(name: str = NAME) -> str:
    """Registers flashattn with transformers' attention and mask interfaces under `name`; returns
    it, to pass as ``attn_implementation``."""
    if "flash" in name:
        raise ValueError(
            f"flashattn: the name {name!r} contains 'flash', which transformers takes for a "
            "FlashAttention kernel to load from the Hub; choose another (default: 'fa_cpp')")
    from transformers import AttentionInterface

    AttentionInterface.register(name, attention_forward)
    try:
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    except ImportError:  # no mask interface: transformers gives no mask, so padding is ignored
        return name
    AttentionMaskInterface.register(name, flash_attention_mask)
    return name


def _unpad(keep: torch.Tensor):
    """keep (batch, seqlen) bool → the flat indices of the kept rows, int32 cu_seqlens (batch + 1)
    and the longest sequence."""
    lengths = keep.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(keep.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    return indices, cu_seqlens, int(lengths.max())


def _rows(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(batch, seqlen, heads, dim) → the rows at flat indices: (total, heads, dim)."""
    return x.reshape(-1, *x.shape[2:]).index_select(0, indices)


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention function signature: query (batch, heads, q_len, dim), key/value
    (batch, kv_heads, kv_len, dim) (GQA needs no repeat here); returns the output as
    (batch, q_len, heads, dim) and no attention weights."""
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("flashattn: attention sinks (s_aux) are not supported")
    if kwargs.get("output_attentions", False):
        raise NotImplementedError("flashattn: output_attentions=True is not supported (use eager)")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise NotImplementedError(
            "flashattn: only padding masks (batch, kv_len) are supported, got a mask of shape "
            f"{tuple(attention_mask.shape)}; register() sets up transformers to give those")

    batch, _, q_len, _ = query.shape
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (batch, seqlen, heads, dim)
    kv_len = k.shape[1]
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    window = (-1, -1)
    if sliding_window is not None and kv_len > sliding_window:
        # transformers counts the window in tokens, the query's own included.
        window = (sliding_window - 1, sliding_window - 1)
    options = dict(dropout_p=dropout, softmax_scale=scaling, causal=causal, window_size=window,
                   softcap=0.0 if softcap is None else float(softcap))

    if attention_mask is not None:
        keep = attention_mask.to(torch.bool)
        if kv_len > keep.shape[-1]:  # a static cache longer than the mask: its tail is unused
            k, v = k[:, :keep.shape[-1]], v[:, :keep.shape[-1]]
        k_idx, cu_k, max_k = _unpad(keep)
        # Left padding (transformers' convention): the queries are the last q_len positions.
        q_idx, cu_q, max_q = _unpad(keep[:, -q_len:])
        q_rows, k_rows, v_rows = _rows(q, q_idx), _rows(k, k_idx), _rows(v, k_idx)
        out = flash_attn_varlen_func(q_rows, k_rows, v_rows, cu_q, cu_k, max_q, max_k, **options)
        full = out.new_zeros(batch * q_len, *out.shape[1:])
        full.index_copy_(0, q_idx, out)
        return full.view(batch, q_len, *out.shape[1:]), None

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is not None and cu_k is not None:  # padding-free packed batch (batch == 1)
        q_rows, k_rows, v_rows = (x.reshape(-1, *x.shape[2:]) for x in (q, k, v))
        out = flash_attn_varlen_func(
            q_rows, k_rows, v_rows, cu_q.to(torch.int32), cu_k.to(torch.int32),
            int(kwargs.get("max_length_q") or 0), int(kwargs.get("max_length_k") or 0), **options)
        return out.view(batch, q_len, *out.shape[1:]), None

    return flash_attn_func(q, k, v, **options), None

