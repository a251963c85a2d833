"""The AS-Distance between two batches of diagonal Gaussians, in memory that grows with `B x B`, not `B x B x Z`.

For `a_i = N(mu_a_i, var_a_i)` and `b_j = N(mu_b_j, var_b_j)` the kernel per latent dimension `d` is the overlap
integral `k(a_i, b_j)_d = exp(-0.5 (mu_a_i,d - mu_b_j,d)^2 / s) / sqrt(s)` with `s = var_a_i,d + var_b_j,d`
(times `(2 pi)^(-1/2)` with `include_constant=True`), and

    AS(a, b) = R(a, a) + R(b, b) - 2 R(a, b),    R(u, v) = sum (or mean) over (i, j, d) of k(u_i, v_j)_d

(see `docs/algorithm.md`, Eq. 6-7). The straightforward broadcast form materialises several `B x B x Z`
tensors and keeps them for the backward pass. Here the three sums are one: with `c` the two batches stacked and
`alpha = +1` on `a`'s rows, `-1` on `b`'s (`1 / B_a`, `-1 / B_b` for the mean), `AS = sum_{i,j} alpha_i alpha_j
sum_d k(c_i, c_j)_d`. A custom autograd function evaluates that symmetric kernel block by block (only the blocks
on and above the diagonal), keeps only the `(B_a + B_b) x Z` inputs for the backward pass, and there recomputes
the kernel block by block to form the gradients analytically.
"""

import contextlib
import math
from typing import Iterator, Optional, Tuple

import torch

REDUCTIONS = ("sum", "mean")

# A block holds at most this many kernel entries by default; a block needs about five float32 temporaries of
# that size, whatever B and Z are. On the CPU blocks whose temporaries stay in the cache are fastest (2^18
# entries: 1 MiB per temporary; measured on one thread 10-40% faster than 2^20..2^24 for B >= 512); on an
# accelerator, large blocks amortise the kernel launches (2^23 entries: 32 MiB per temporary).
DEFAULT_CHUNK_SIZE_CPU = 2**18
DEFAULT_CHUNK_SIZE = 2**23

# `logvar` is clamped to this range before `exp`. Only values no encoder produces in practice are touched: below
# -45 the variance sum could underflow and its powers overflow float32 in the gradient; above 80 `exp` overflows.
# Inside the range every value and gradient is finite in float32 (checked down to -45 and up to 80).
LOGVAR_MIN = -45.0
LOGVAR_MAX = 80.0

# block shapes: rows at least this long (unless the chunk forces shorter ones), and the fixed cost of a block in
# kernel entries (measured on the CPU: ~100 us of Python and dispatch per block against ~3 ns per entry; on a GPU
# the same overhead is worth millions of entries -- an estimate, not measured here)
_MIN_ROW = 16
_BLOCK_COST_CPU = 2**15
_BLOCK_COST = 2**22

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _block_shape(n_d: int, n: int, chunk: int, block_cost: int) -> Tuple[int, int]:
    """
    Rows per block side `bb` and latent dims per block `dc` (`dc * bb * bb <= chunk`) minimising a cost model:
    kernel entries evaluated (fewer with more, smaller blocks: the upper triangle skips more) plus a fixed cost
    per block (Python and dispatch overhead, worth `block_cost` entries).
    """
    best = None
    max_split = max(1, n // _MIN_ROW, -(-n // max(1, math.isqrt(chunk))))
    for split in range(1, max_split + 1):
        bb = -(-n // split)
        if bb * bb > chunk and bb > 1:
            continue
        sides = -(-n // bb)
        dc = max(1, min(n_d, chunk // (bb * bb)))
        pairs = sides * (sides + 1) // 2
        cost = n_d * bb * bb * pairs + block_cost * pairs * -(-n_d // dc)
        if best is None or cost < best[0]:
            best = (cost, bb, dc)
    return best[1], best[2]


def _blocks(
    n_d: int, n: int, chunk: int, block_cost: int = _BLOCK_COST_CPU
) -> Iterator[Tuple[slice, slice, slice, bool]]:
    """
    Yield `(d, i, j, diagonal)` slices covering the upper block triangle of the symmetric `n_d x n x n` kernel,
    each block at most `chunk` entries (square over the batch, so that the symmetry can be used block-wise).
    `diagonal` blocks (`i == j`) are counted once; the others stand for themselves and their mirror image.
    """
    bb, dc = _block_shape(n_d, n, chunk, block_cost)
    for d0 in range(0, n_d, dc):
        d = slice(d0, min(d0 + dc, n_d))
        for i0 in range(0, n, bb):
            i = slice(i0, min(i0 + bb, n))
            yield d, i, i, True
            for j0 in range(i0 + bb, n, bb):
                yield d, i, slice(j0, min(j0 + bb, n)), False


def _weighted_kernel_sum(mu, var, alpha, chunk: int, block_cost: int) -> torch.Tensor:
    """
    `S = sum_{i,j} alpha_i alpha_j sum_d exp(-0.5 (mu_i - mu_j)^2 / s) / sqrt(s)`, `s = var_i + var_j`, in float64.

    `mu` (already scaled by `sqrt(1/2)`, so that `(mu_i - mu_j)^2 / s` is the exponent) and `var` are `Z x N`
    (transposed, contiguous); `alpha` is a float64 `N`-vector.
    """
    total = torch.zeros((), dtype=torch.float64, device=mu.device)
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    for d, i, j, diagonal in _blocks(mu.shape[0], mu.shape[1], chunk, block_cost):
        y = mu[d, i, None] - mu[d, None, j]  # dc x bi x bj
        r = (var[d, i, None] + var[d, None, j]).rsqrt_()  # 1 / sqrt(s)
        y.mul_(r)
        k = torch.addcmul(zero, y, y, value=-1.0, out=y).exp_().mul_(r)  # exp(-0.5 m^2 / s) / sqrt(s)
        # float32 entries, float64 sums: the signed sum cancels most of its B*B*Z terms (R(a, a) + R(b, b) -
        # 2 R(a, b)), so it must keep their low digits. (Summing over d in float32 first would be ~5% faster but
        # measured 25x less precise: a few float32 ulps per (i, j) instead of errors that average out over d.)
        k_ij = k.sum(dim=0, dtype=torch.float64)  # bi x bj
        part = torch.dot(alpha[i], torch.mv(k_ij, alpha[j]))
        total += part if diagonal else 2.0 * part
    return total


def _weighted_kernel_grads(mu, var, alpha, chunk: int, block_cost: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Gradients of `S` (see `_weighted_kernel_sum`, same `mu`, `var`) w.r.t. the unscaled means and `var`
    (`Z x N`, float64); `alpha` in `mu`'s dtype.

    Per dimension, with `m = mu_i - mu_j`, `s = var_i + var_j` and `k = exp(-0.5 m^2 / s) s^(-1/2)`:

        dk/dmu_i = -k m / s,    dk/dvar_i = 0.5 (k / s) (m^2 / s - 1)

    `S` is symmetric in (i, j), so row `p` gets `2 alpha_p sum_j alpha_j dk(p, j)/d(mu_p, var_p)`: a
    matrix-vector product per block. A block above the diagonal also stands for its mirror image, whose rows are
    this block's columns: `k m / s` is antisymmetric in (i, j), `dk/ds` symmetric, so the columns get
    `+2 alpha_q sum_i alpha_i k m / s` and `2 alpha_q sum_i alpha_i dk/ds`.

    In the scaled variables (`y = m sqrt(1/2) / sqrt(s)`, `t = k / s`): `k m / s = sqrt(2) t (m sqrt(1/2))` and
    `dk/ds = t (y^2 - 1/2)`.
    """
    g_mu = torch.zeros(mu.shape, dtype=torch.float64, device=mu.device)
    g_var = torch.zeros_like(g_mu)
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    for d, i, j, diagonal in _blocks(mu.shape[0], mu.shape[1], chunk, block_cost):
        m = mu[d, i, None] - mu[d, None, j]  # m sqrt(1/2)
        r = (var[d, i, None] + var[d, None, j]).rsqrt_()  # 1 / sqrt(s)
        y2 = m * r
        torch.addcmul(zero, y2, y2, value=-1.0, out=y2)  # -y^2 = -0.5 m^2 / s
        t = y2.exp().mul_(r).mul_(r).mul_(r)  # k / s
        gm = m.mul_(t)  # (k m / s) / sqrt(2)
        gs = y2.add_(0.5).mul_(t)  # t (1/2 - y^2) = -dk/ds
        a_i, a_j = alpha[i], alpha[j]
        g_mu[d, i] -= a_i * torch.matmul(gm, a_j)
        g_var[d, i] -= a_i * torch.matmul(gs, a_j)
        if not diagonal:
            g_mu[d, j] += a_j * torch.matmul(a_i, gm)
            g_var[d, j] -= a_j * torch.matmul(a_i, gs)
    # the factor 2 of the symmetry, and sqrt(2) for the scaled means
    return g_mu.mul_(2.0 * math.sqrt(2.0)), g_var.mul_(2.0)


def _no_autocast(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support: nothing to disable
        return contextlib.nullcontext()


class _WeightedKernelSum(torch.autograd.Function):
    """
    `scale * sum_{i,j} alpha_i alpha_j sum_d k(c_i, c_j)_d` with a block-wise recomputing backward pass.

    Inputs: `mu`, `logvar` (`N x Z`, float32 or float64), `alpha` (`N`, float64, not differentiated), `scale`
    (float), `chunk` (int).
    """

    @staticmethod
    def forward(ctx, mu, logvar, alpha, scale, chunk):
        block_cost = _BLOCK_COST_CPU if mu.device.type == "cpu" else _BLOCK_COST
        with _no_autocast(mu.device):
            mu_t, var_t = (mu * math.sqrt(0.5)).t().contiguous(), logvar.t().exp().contiguous()
            out = scale * _weighted_kernel_sum(mu_t, var_t, alpha, chunk, block_cost)
        ctx.save_for_backward(mu, logvar, alpha)
        ctx.scale, ctx.chunk, ctx.block_cost = scale, chunk, block_cost
        return out.to(mu.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        mu, logvar, alpha = ctx.saved_tensors
        with _no_autocast(mu.device):
            mu_t, var_t = (mu * math.sqrt(0.5)).t().contiguous(), logvar.t().exp().contiguous()
            g_mu, g_var = _weighted_kernel_grads(mu_t, var_t, alpha.to(mu.dtype), ctx.chunk, ctx.block_cost)
            g = grad_out.to(torch.float64) * ctx.scale
            grad_mu = g_mu.mul_(g).t().to(mu.dtype)
            grad_logvar = g_var.mul_(g).mul_(var_t).t().to(mu.dtype)  # d/dlogvar = var d/dvar
        return grad_mu, grad_logvar, None, None, None


def as_distance(
    mu_a: torch.Tensor,
    logvar_a: torch.Tensor,
    mu_b: torch.Tensor,
    logvar_b: torch.Tensor,
    reduction: str = "sum",
    squash: bool = False,
    include_constant: bool = False,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    r"""
    The AS-Distance `AS(a, b) = R(a, a) + R(b, b) - 2 R(a, b)` between two batches of diagonal Gaussians.

    `R(u, v)` reduces the per-dimension overlap kernel `exp(-0.5 (mu_u_i - mu_v_j)^2 / s) / sqrt(s)`,
    `s = var_u_i + var_v_j`, over all pairs `(i, j)` and latent dimensions `d`. The kernel is evaluated block by
    block and recomputed in the backward pass, so forward plus backward need memory of the order of one block
    (`chunk_size` entries), never `B x B x Z`. The kernel is computed in float32 (float64 if an input is float64),
    also under autocast, and each block's sum is accumulated in float64.

    Args:
        mu_a (`torch.Tensor`): Means of the first batch, `B_a x Z` (trailing dimensions beyond the first are
            flattened into `Z`).
        logvar_a (`torch.Tensor`): Log-variances of the first batch, same shape as `mu_a`.
        mu_b (`torch.Tensor`): Means of the second batch, `B_b x Z`; `B_b` may differ from `B_a`.
        logvar_b (`torch.Tensor`): Log-variances of the second batch, same shape as `mu_b`.
        reduction (`str`, *optional*, defaults to `"sum"`): `"sum"` or `"mean"` over `(i, j, d)` in each `R` (the
            reference code sums in the encoder step and averages in the decoder step).
        squash (`bool`, *optional*, defaults to `False`): Apply `tanh` to all four inputs first, as the reference
            code does before the distance.
        include_constant (`bool`, *optional*, defaults to `False`): Multiply the kernel by the Gaussian constant
            `(2 pi)^(-1/2)` of the paper (the reference code drops it).
        chunk_size (`int`, *optional*): Most kernel entries evaluated at once (memory is about five float32
            temporaries of this size). Defaults to `2**18` on the CPU
            (cache-sized blocks are fastest there) and `2**23` on other devices.

    Returns:
        `torch.Tensor`: A 0-dim tensor, float32 (float64 if an input is float64). Differentiable w.r.t. all four
        inputs (first-order only). `logvar` values outside `[-45, 80]` are clamped (zero gradient there).

    Examples:

    ```py
    >>> import torch
    >>> from asintrovae_hf import as_distance
    >>> mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    >>> float(as_distance(mu, logvar, mu, logvar))
    0.0
    ```
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    tensors = (mu_a, logvar_a, mu_b, logvar_b)
    if any(t.dim() < 2 for t in tensors):
        raise ValueError(
            "as_distance expects B x Z tensors, got mu_a, logvar_a, mu_b, logvar_b of shapes "
            f"{tuple(mu_a.shape)}, {tuple(logvar_a.shape)}, {tuple(mu_b.shape)}, {tuple(logvar_b.shape)}."
        )
    for name, mu, logvar in (("a", mu_a, logvar_a), ("b", mu_b, logvar_b)):
        if mu.shape != logvar.shape:
            raise ValueError(
                f"mu_{name} and logvar_{name} must have the same shape, "
                f"got {tuple(mu.shape)} and {tuple(logvar.shape)}."
            )
    if mu_a.shape[1:].numel() != mu_b.shape[1:].numel():
        raise ValueError(
            f"a and b must have the same latent size, got shapes {tuple(mu_a.shape)} and {tuple(mu_b.shape)}."
        )
    if mu_a.shape[0] == 0 or mu_b.shape[0] == 0 or mu_a.shape[1:].numel() == 0:
        raise ValueError(
            f"as_distance needs non-empty batches, got shapes {tuple(mu_a.shape)} and {tuple(mu_b.shape)}."
        )
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE_CPU if mu_a.device.type == "cpu" else DEFAULT_CHUNK_SIZE
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")

    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    mu_a, logvar_a, mu_b, logvar_b = (t.flatten(1).to(dtype) for t in tensors)
    if squash:
        mu_a, logvar_a, mu_b, logvar_b = (torch.tanh(t) for t in (mu_a, logvar_a, mu_b, logvar_b))

    # AS = R(a, a) + R(b, b) - 2 R(a, b) = sum_{i,j over a and b} alpha_i alpha_j sum_d k(c_i, c_j)_d with c the
    # concatenated batches and alpha = +w_a on a's rows, -w_b on b's rows: w = 1 for the sum, and 1 / B with a
    # 1 / Z factor for the mean (then w_a^2 = 1 / B_a^2, w_a w_b = 1 / (B_a B_b): each R's own mean).
    n_a, n_b, n_z = mu_a.shape[0], mu_b.shape[0], mu_a.shape[1]
    scale = _INV_SQRT_2PI if include_constant else 1.0
    if reduction == "mean":
        w_a, w_b, scale = 1.0 / n_a, 1.0 / n_b, scale / n_z
    else:
        w_a = w_b = 1.0
    alpha = torch.cat(
        [
            torch.full((n_a,), w_a, dtype=torch.float64, device=mu_a.device),
            torch.full((n_b,), -w_b, dtype=torch.float64, device=mu_a.device),
        ]
    )
    mu = torch.cat([mu_a, mu_b])
    logvar = torch.cat([logvar_a, logvar_b]).clamp(LOGVAR_MIN, LOGVAR_MAX)
    return _WeightedKernelSum.apply(mu, logvar, alpha, scale, int(chunk_size))
