"""flash_attn_combine: attention over the union of disjoint sets of keys, from each set's
(out, lse) computed by flashattn's forward, against the float64 reference over all the keys
(DESIGN §4's rule); and the empty-row, layout and error cases."""

import pytest

torch = pytest.importorskip("torch")
flashattn = pytest.importorskip("flashattn")

from flashattn import flash_attn_combine, flash_attn_func, flash_attn_varlen_func  # noqa: E402
from test_interface import DEVICE_DTYPES, _rand, check_against_reference, ref_attention  # noqa: E402

CUTS = (0, 7, 8, 60, 97)  # key sets of 7, 1, 52 and 37 keys


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("d", [32, 72])
def test_combine_of_key_sets_matches_attention_over_all_keys(device, dtype, d):
    batch, seqlen_q, heads, heads_k = 2, 5, 4, 2
    inputs = [_rand(batch, seqlen_q, heads, d, seed=1, device=device),
              _rand(batch, CUTS[-1], heads_k, d, seed=2, device=device),
              _rand(batch, CUTS[-1], heads_k, d, seed=3, device=device)]

    def ours(q, k, v):
        outs, lses = [], []
        for a, b in zip(CUTS, CUTS[1:]):
            out, lse, _ = flash_attn_func(q, k[:, a:b], v[:, a:b], return_attn_probs=True)
            outs.append(out.float())
            lses.append(lse)
        return flash_attn_combine(torch.stack(outs), torch.stack(lses), out_dtype=q.dtype)

    check_against_reference(ours, ref_attention, inputs, dtype, backward=False)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
def test_combine_varlen_layout_and_rows_no_set_saw(device, dtype):
    """The varlen layout (splits, total, heads, d) with (splits, heads, total); a row that no set
    saw a key of (every lse −inf) gives out 0 and lse −inf; a row that one set did not see keeps
    the other's result exactly (weight exp(−inf) = 0)."""
    splits, total, heads, d = 2, 6, 3, 40
    op = _rand(splits, total, heads, d, seed=4, device=device)
    lp = _rand(splits, heads, total, seed=5, device=device)
    lp[:, :, 0] = float("-inf")  # row 0: no keys anywhere
    lp[1, :, 1] = float("-inf")  # row 1: only set 0 saw keys
    out, lse = flash_attn_combine(op, lp, out_dtype=dtype)
    assert out.shape == (total, heads, d) and out.dtype == dtype and lse.shape == (heads, total)
    assert torch.all(out[0] == 0) and torch.all(lse[:, 0] == float("-inf"))
    torch.testing.assert_close(out[1].float(), op[0, 1].to(dtype).float())
    torch.testing.assert_close(lse[:, 1], lp[0, :, 1])
    ref_lse = torch.logsumexp(lp.double(), dim=0)
    w = torch.exp(lp.double() - ref_lse).permute(0, 2, 1).unsqueeze(-1)  # (splits, total, heads, 1)
    ref_out = torch.nan_to_num((w * op.double()).sum(0))
    torch.testing.assert_close(lse[:, 2:].double(), ref_lse[:, 2:], rtol=1e-5, atol=1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out[2:].double(), ref_out[2:], rtol=tol, atol=tol)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("splits, d", [(37, 30), (70, 128), (130, 260), (3, 4)])
def test_combine_many_splits_and_columns(device, dtype, splits, d):
    """Split counts past one pass of the CUDA combine's loads (8 warps × 8 splits) and past a
    decode step's 128 (the LSE's one round of loads), head dims that take its 4-column and its
    1-column path and several passes over the columns, some splits that saw no key: against the
    sum in float64."""
    batch, seqlen, heads = 2, 3, 5
    op = _rand(splits, batch, seqlen, heads, d, seed=11, device=device)
    lp = 4 * _rand(splits, batch, heads, seqlen, seed=12, device=device)
    lp[::3, 0] = float("-inf")
    out, lse = flash_attn_combine(op, lp, out_dtype=dtype)
    ref_lse = torch.logsumexp(lp.double(), dim=0)
    w = torch.exp(lp.double() - ref_lse).permute(0, 1, 3, 2).unsqueeze(-1)
    ref_out = (w * op.double()).sum(0)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=1e-5, atol=1e-5)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), ref_out, rtol=tol, atol=tol)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
def test_combine_nan_partial_lse_poisons_its_row(device, dtype):
    """A NaN partial LSE makes its row's out and LSE NaN (a max that skips NaN would drop it)."""
    op = _rand(3, 2, 4, 2, 8, seed=13, device=device)
    lp = _rand(3, 2, 2, 4, seed=14, device=device)
    lp[1, 0, 1, 2] = float("nan")
    out, lse = flash_attn_combine(op, lp, out_dtype=dtype)
    assert out[0, 2, 1].isnan().all() and lse[0, 1, 2].isnan()
    out[0, 2, 1] = 0
    lse[0, 1, 2] = 0
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES[:2])
def test_combine_into_given_out_and_strided_partials(device, dtype):
    """`out` is written in place; partials may be strided views (every d-th split of a larger
    buffer)."""
    splits, batch, seqlen, heads, d = 3, 2, 4, 2, 16
    big = _rand(2 * splits, batch, seqlen, heads, d, seed=6, device=device)
    op = big[::2]
    lp = _rand(splits, batch, heads, seqlen, seed=7, device=device)
    out = torch.full((batch, seqlen, heads, d), float("nan"), device=device, dtype=dtype)
    got, lse = flash_attn_combine(op, lp, out=out)
    assert got is out and not torch.isnan(out).any()
    ref, ref_lse = flash_attn_combine(op.contiguous(), lp.contiguous(), out_dtype=dtype)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(lse, ref_lse)
    assert lse.shape == (batch, heads, seqlen)


def test_combine_errors_name_the_argument():
    op, lp = _rand(2, 3, 2, 8), _rand(2, 2, 3)
    with pytest.raises(flashattn.FlashAttnError, match="argument 'lse_partial'"):
        flash_attn_combine(op, _rand(2, 2, 4))
    with pytest.raises(flashattn.FlashAttnError, match="argument 'out_partial'.*fp32"):
        flash_attn_combine(op.half(), lp)
    with pytest.raises(flashattn.FlashAttnError, match="argument 'out'"):
        flash_attn_combine(op, lp, out_dtype=torch.float64)
    with pytest.raises(flashattn.FlashAttnError, match="argument 'lse_partial'"):
        flash_attn_combine(_rand(2, 1, 3, 2, 8), _rand(2, 1, 3, 3))
    with pytest.raises(flashattn.FlashAttnError, match="argument 'out_partial': expected"):
        flash_attn_combine(_rand(2, 3, 8), lp)


def test_combine_varlen_forward_partials():
    """The varlen forward's (out, lse) layouts feed the varlen combine directly."""
    cu_q = torch.tensor([0, 3, 8], dtype=torch.int32)
    q = _rand(8, 2, 16, seed=8)
    k, v = _rand(20, 2, 16, seed=9), _rand(20, 2, 16, seed=10)
    cu_k = [torch.tensor([0, 4, 10], dtype=torch.int32), torch.tensor([0, 6, 10], dtype=torch.int32)]
    parts = [(k[:10], v[:10]), (k[10:], v[10:])]
    outs, lses = [], []
    for (kk, vv), ck in zip(parts, cu_k):
        out, lse, _ = flash_attn_varlen_func(q, kk, vv, cu_q, ck, 5, 6, return_attn_probs=True)
        outs.append(out)
        lses.append(lse)
    out, lse = flash_attn_combine(torch.stack(outs), torch.stack(lses))
    # Sequence 0 saw keys [0, 4) and [10, 16); sequence 1 keys [4, 10) and [16, 20).
    for s, (qa, qb), keys in ((0, (0, 3), [*range(0, 4), *range(10, 16)]),
                             (1, (3, 8), [*range(4, 10), *range(16, 20)])):
        ref_out, ref_lse = ref_attention(q[None, qa:qb].double(), k[None, keys].double(),
                                         v[None, keys].double())
        torch.testing.assert_close(out[qa:qb].double(), ref_out[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lse[:, qa:qb].double(), ref_lse[0], rtol=1e-5, atol=1e-5)
