"""flashattn inside a Hugging Face transformers model: a small randomly initialised Llama (built
from a config, nothing downloaded), run with attn_implementation="sdpa" and with flashattn
(registered in one line), logits compared.

    python examples/hf_llama.py                   # CPU, float32
    python examples/hf_llama.py --device cuda     # GPU, bfloat16

Three runs of the same weights and tokens: `ours` (flashattn, in the dtype), `plain` (PyTorch SDPA,
in the dtype) and `ref` (PyTorch SDPA in float64 on the CPU, float32 on the GPU). The check is the
rule of DESIGN.md §4: max|ours − ref| ≤ 2·max|plain − ref| + eps, on two steps: a prefill of a
batch whose second sequence is left-padded (the padding mask becomes a variable-length batch), and
one cached decoding step (one query against the cache). Prints one line per step and a JSON
summary; the exit status is non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys

import torch


def build(config, name: str, dtype: torch.dtype, device: str, state):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, attn_implementation=name)
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def run_steps(model, ids, mask, next_ids):
    """Prefill logits (batch, seqlen, vocab) and the logits of one cached decoding step."""
    from transformers import DynamicCache

    # transformers 5.24 renamed past_key_values to cache: pass the cache under the name this
    # version's forward takes (5.17, on the GPU machine, knows only past_key_values).
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    cache = DynamicCache()
    with torch.no_grad():
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kw: cache})
        step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step = model(input_ids=next_ids, attention_mask=step_mask, use_cache=True,
                     **{cache_kw: cache})
    return prefill.logits.double().cpu(), step.logits.double().cpu()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on the CPU, bfloat16 on the GPU")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seqlen", type=int, default=96)
    parser.add_argument("--pad", type=int, default=17, help="left padding of the second sequence")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, LlamaConfig

    import flashattn
    import flashattn.integrations.transformers as fa_hf

    name = fa_hf.register()  # the one line: attn_implementation=name from now on

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    ref_dtype = torch.float32 if device == "cuda" else torch.float64

    config = LlamaConfig(
        vocab_size=1024, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=4 * args.seqlen)
    torch.manual_seed(args.seed)  # the randomly initialised weights that every run shares
    state = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").state_dict()

    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seqlen), generator=gen)
    mask = torch.ones_like(ids)
    if args.batch > 1 and args.pad > 0:
        mask[1, :args.pad] = 0  # left padding, transformers' convention for generation
    next_ids = torch.randint(0, config.vocab_size, (args.batch, 1), generator=gen)
    ids, mask, next_ids = ids.to(device), mask.to(device), next_ids.to(device)

    runs = {
        "ours": (name, dtype),
        "plain": ("sdpa", dtype),
        "ref": ("sdpa", ref_dtype),
    }
    logits = {key: run_steps(build(config, impl, dt, device, state), ids, mask, next_ids)
              for key, (impl, dt) in runs.items()}

    real = mask.cpu().bool()  # padded positions have no meaningful logits
    results, ok = [], True
    for step, where in (("prefill", real), ("decode", torch.ones(args.batch, 1, dtype=torch.bool))):
        index = 0 if step == "prefill" else 1
        ours, plain, ref = (logits[k][index][where] for k in ("ours", "plain", "ref"))
        err, plain_err = (ours - ref).abs().max().item(), (plain - ref).abs().max().item()
        eps = 1e-6 * ref.abs().max().item()
        bound = 2 * plain_err + eps
        passed = err <= bound
        ok &= passed
        results.append(dict(step=step, max_abs_logit_diff_vs_sdpa=(ours - plain).abs().max().item(),
                            err_vs_ref=err, sdpa_err_vs_ref=plain_err, bound=bound, passed=passed))
        print(f"{step:8s} max|logit diff| flashattn vs sdpa {results[-1]['max_abs_logit_diff_vs_sdpa']:.3e}"
              f"   vs the {str(ref_dtype).split('.')[-1]} reference: flashattn {err:.3e},"
              f" sdpa {plain_err:.3e}  {'PASS' if passed else 'FAIL'}")
    summary = dict(device=device if device == "cpu" else torch.cuda.get_device_name(),
                   dtype=str(dtype).split(".")[-1], transformers=transformers.__version__,
                   torch=torch.__version__, flashattn=flashattn.__version__,
                   attn_implementation=name, passed=ok, steps=results)
    print(json.dumps(summary))
    return 0 if ok else 1



if __name__ == "__main__":
    sys.exit(main())
