"""What the register spills of tools/spills.txt cost the kernels that run them: under ncu, each
kernel's local-memory instructions (the spill stores and loads) as a share of the instructions
it executes, and how many of their sectors hit in L1. A tuning aid (the kernels' speed is
bench/bench.py's): run it as

    ncu --csv --metrics smsp__inst_executed.sum,smsp__sass_inst_executed_op_local_ld.sum,\
smsp__sass_inst_executed_op_local_st.sum,l1tex__t_sector_pipe_lsu_mem_local_op_ld_hit_rate.pct,\
gpu__time_duration.sum python3 bench/spill_traffic.py

It makes one call of each kernel family that spills, on the GPU it runs on (set
FLASHATTN_DISABLE_SM90=1 for the sm80 kernels on a Hopper GPU): forward and backward, bf16,
4 × 2048 tokens, 16 heads, at head dims 64, 96, 128, 192, 224 and 256, with score mods (softcap)
and without, and a split-KV decode step (1 query, 32/8 heads, 16k keys) at 128, 224 and 256.
"""
from __future__ import annotations

import torch

from flashattn import flash_attn_func, flash_attn_with_kvcache


def main():
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    for d in (64, 96, 128, 192, 224, 256):
        for softcap in (0.0, 30.0):
            q, k, v = (torch.randn(4, 2048, 16, d, device=dev, dtype=dt, requires_grad=True)
                       for _ in range(3))
            out = flash_attn_func(q, k, v, causal=True, softcap=softcap)
            out.backward(torch.randn_like(out))
    for d in (128, 224, 256):
        q = torch.randn(1, 1, 32, d, device=dev, dtype=dt)
        kc, vc = (torch.randn(1, 16384, 8, d, device=dev, dtype=dt) for _ in range(2))
        flash_attn_with_kvcache(q, kc, vc, cache_seqlens=16384)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
