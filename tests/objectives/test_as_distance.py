"""`as_distance` against docs/algorithm.md, Eq. 6-7, written out here twice: a scalar triple loop, a broadcast form."""

import itertools
import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from asintrovae_hf.objectives.as_distance import _blocks, as_distance

REDUCTIONS = ("sum", "mean")


def loop_as_distance(mu_a, logvar_a, mu_b, logvar_b, reduction="sum", squash=False, include_constant=False):
    """AS = R(a, a) + R(b, b) - 2 R(a, b) with Python floats, one (i, j, d) at a time."""
    rows = [[[float(v) for v in row] for row in t.tolist()] for t in (mu_a, logvar_a, mu_b, logvar_b)]
    if squash:
        rows = [[[math.tanh(v) for v in row] for row in t] for t in rows]
    mu_a, logvar_a, mu_b, logvar_b = rows
    const = 1.0 / math.sqrt(2.0 * math.pi) if include_constant else 1.0

    def r(mu_u, logvar_u, mu_v, logvar_v):
        total, count = 0.0, 0
        for i in range(len(mu_u)):
            for j in range(len(mu_v)):
                for d in range(len(mu_u[i])):
                    s = math.exp(logvar_u[i][d]) + math.exp(logvar_v[j][d])
                    total += const * math.exp(-0.5 * (mu_u[i][d] - mu_v[j][d]) ** 2 / s) / math.sqrt(s)
                    count += 1
        return total / count if reduction == "mean" else total

    return r(mu_a, logvar_a, mu_a, logvar_a) + r(mu_b, logvar_b, mu_b, logvar_b) - 2 * r(mu_a, logvar_a, mu_b, logvar_b)


def broadcast_r(mu_u, logvar_u, mu_v, logvar_v, reduction="sum"):
    s = logvar_u.exp()[:, None, :] + logvar_v.exp()[None, :, :]
    k = torch.exp(-0.5 * (mu_u[:, None, :] - mu_v[None, :, :]) ** 2 / s) / torch.sqrt(s)
    return k.mean() if reduction == "mean" else k.sum()


def broadcast_as_distance(mu_a, logvar_a, mu_b, logvar_b, reduction="sum", squash=False):
    """The naive form: B x B x Z tensors, differentiated by autograd."""
    if squash:
        mu_a, logvar_a, mu_b, logvar_b = (torch.tanh(t) for t in (mu_a, logvar_a, mu_b, logvar_b))
    r_aa = broadcast_r(mu_a, logvar_a, mu_a, logvar_a, reduction)
    r_bb = broadcast_r(mu_b, logvar_b, mu_b, logvar_b, reduction)
    return r_aa + r_bb - 2 * broadcast_r(mu_a, logvar_a, mu_b, logvar_b, reduction)


def random_inputs(n_a, n_b, z, dtype=torch.float64, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(n_a, z), (n_a, z), (n_b, z), (n_b, z)]
    out = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in shapes]
    out[1], out[3] = 0.7 * out[1], 0.7 * out[3]  # logvar
    return [t.to(dtype).requires_grad_(requires_grad) for t in out]


@pytest.mark.parametrize(
    "reduction,squash,include_constant", list(itertools.product(REDUCTIONS, (False, True), (False, True)))
)
def test_matches_triple_loop(reduction, squash, include_constant):
    inputs = random_inputs(3, 5, 4)
    expected = loop_as_distance(*inputs, reduction=reduction, squash=squash, include_constant=include_constant)
    got = as_distance(*inputs, reduction=reduction, squash=squash, include_constant=include_constant)
    assert got.dim() == 0 and got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("dtype", (torch.float64, torch.float32))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("squash", (False, True))
@pytest.mark.parametrize("chunk_size", (50, 700))
def test_chunked_values_and_grads_match_broadcast(dtype, reduction, squash, chunk_size):
    n_a, n_b, z = 23, 17, 9
    assert len(list(_blocks(z, n_a + n_b, chunk_size))) > 3  # the chunking really splits
    ours_in = random_inputs(n_a, n_b, z, dtype=dtype, seed=1, requires_grad=True)
    ref_in = [t.detach().double().requires_grad_() for t in ours_in]
    ours = as_distance(*ours_in, reduction=reduction, squash=squash, chunk_size=chunk_size)
    ref = broadcast_as_distance(*ref_in, reduction=reduction, squash=squash)
    assert ours.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-7)
    scale = ref.abs().item()
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))
    for g_ours, g_ref in zip(torch.autograd.grad(ours, ours_in), torch.autograd.grad(ref, ref_in)):
        assert g_ours.dtype == dtype
        g_scale = g_ref.abs().max().item()
        torch.testing.assert_close(g_ours.double(), g_ref, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * g_scale)


def test_default_and_whole_chunk_agree():
    inputs = random_inputs(40, 30, 6, seed=2)
    values = [as_distance(*inputs, chunk_size=c).item() for c in (None, 1, 97, 10**9)]
    for v in values[1:]:
        assert v == pytest.approx(values[0], rel=1e-11)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_properties(reduction):
    a = random_inputs(12, 12, 5, seed=3)[:2]
    r_aa = broadcast_r(*a, *a, reduction)
    assert abs(as_distance(*a, *a, reduction=reduction).item()) <= 1e-13 * r_aa.item()
    # float32: zero up to rounding, relative to R(a, a) ~ B^2 Z
    a32 = [t.float() for t in random_inputs(300, 300, 16, seed=4)[:2]]
    r_scale = 300 * 300 * 16 if reduction == "sum" else 1.0
    assert abs(as_distance(*a32, *a32, reduction=reduction).item()) <= 1e-10 * r_scale
    for seed, squash in itertools.product(range(4), (False, True)):
        mu_a, logvar_a, mu_b, logvar_b = random_inputs(7, 11, 3, seed=10 + seed)
        ab = as_distance(mu_a, logvar_a, mu_b, logvar_b, reduction=reduction, squash=squash)
        ba = as_distance(mu_b, logvar_b, mu_a, logvar_a, reduction=reduction, squash=squash)
        assert ab.item() > 0
        assert ab.item() == pytest.approx(ba.item(), rel=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(reduction):
    inputs = random_inputs(4, 6, 3, seed=5, requires_grad=True)
    for chunk_size in (None, 5):

        def fn(*x):
            return as_distance(*x, reduction=reduction, squash=True, chunk_size=chunk_size)

        assert torch.autograd.gradcheck(fn, inputs)
    # the same tensors as both batches: their gradients add up
    mu, logvar = random_inputs(5, 5, 3, seed=6, requires_grad=True)[:2]
    mu_b, logvar_b = random_inputs(6, 6, 3, seed=7)[:2]
    assert torch.autograd.gradcheck(lambda m, l: as_distance(m, l, m, l, reduction=reduction), (mu, logvar))
    assert torch.autograd.gradcheck(
        lambda m, l: as_distance(m, l, mu_b, logvar_b, reduction=reduction, chunk_size=7), (mu, logvar)
    )


@pytest.mark.parametrize("logvar", (-30.0, 20.0))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extreme_variances_are_finite(logvar, reduction):
    mu_a, _, mu_b, _ = random_inputs(16, 12, 8, dtype=torch.float32, seed=8)
    mu_b[:4] = mu_a[:4]  # coinciding means: the largest kernel values
    logvar_a = torch.full_like(mu_a, logvar) + 0.01 * torch.arange(8.0)
    logvar_b = torch.full_like(mu_b, logvar)
    inputs = [t.requires_grad_() for t in (mu_a, logvar_a, mu_b, logvar_b)]
    value = as_distance(*inputs, reduction=reduction, chunk_size=100)
    assert torch.isfinite(value)
    for g in torch.autograd.grad(value, inputs):
        assert torch.isfinite(g).all()


def test_autocast_bfloat16_computes_in_float32():
    inputs = random_inputs(20, 24, 8, dtype=torch.float32, seed=9)
    expected = as_distance(*inputs, squash=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = as_distance(*inputs, squash=True)
        from_bf16 = as_distance(*[t.bfloat16() for t in inputs], squash=True)
    assert got.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert from_bf16.item() == pytest.approx(expected.item(), rel=0.05)  # only the inputs' rounding differs


def test_float32_keeps_nearby_batches_apart():
    """The float64 accumulation: AS of two close batches is ~1e-6 of R(a, b), yet float32 gets it to ~1e-4."""
    mu_a, logvar_a = random_inputs(128, 128, 16, seed=11)[:2]
    gen = torch.Generator().manual_seed(12)
    mu_b = mu_a + 1e-2 * torch.randn(mu_a.shape, generator=gen, dtype=torch.float64)
    logvar_b = logvar_a + 1e-2 * torch.randn(mu_a.shape, generator=gen, dtype=torch.float64)
    exact = as_distance(mu_a, logvar_a, mu_b, logvar_b).item()
    assert exact < 1e-5 * broadcast_r(mu_a, logvar_a, mu_b, logvar_b).item()
    got = as_distance(*(t.float() for t in (mu_a, logvar_a, mu_b, logvar_b))).item()
    assert got == pytest.approx(exact, rel=2e-3)


def _peak_bytes(fn):
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: (e.start_ns(), e.nbytes()),
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_peak_memory_is_bounded_by_the_chunk():
    n, z, chunk = 256, 32, 2**14
    inputs = random_inputs(n, n, z, dtype=torch.float32, seed=13, requires_grad=True)

    def step():
        torch.autograd.grad(as_distance(*inputs, squash=True, chunk_size=chunk), inputs)

    step()
    peak = _peak_bytes(step)
    one_bbz = n * n * z * 4  # a single B x B x Z float32 tensor: 8 MiB (the naive form keeps ~19 of them)
    rows_by_z = 16 * (2 * n) * z * 8  # (B_a + B_b) x Z: inputs, their copies, float64 gradient buffers
    assert peak < 8 * chunk * 4 + rows_by_z
    assert peak < one_bbz / 4


def test_errors():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"'sum'.*'mean'.*'max'"):
        as_distance(mu, logvar, mu, logvar, reduction="max")
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        as_distance(mu, torch.zeros(3, 5), mu, logvar)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 6\)"):
        as_distance(mu, logvar, torch.zeros(2, 4), torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 6\)"):
        as_distance(mu, logvar, torch.zeros(2, 6), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="chunk_size"):
        as_distance(mu, logvar, mu, logvar, chunk_size=0)
