"""The estimators: histogram KL / JSD, the grid-normalized ELBO, the Frechet distance."""

import math

import numpy as np
import pytest
import torch

from asintrovae_hf.evaluation.frechet import frechet_distance, frechet_distance_from_features
from asintrovae_hf.experiments.toy.metrics import (
    LOG_EPS,
    grid_normalized_elbo,
    histogram_density,
    histogram_kl_jsd,
    kl_jsd_from_densities,
)

LOG_EPS_VALUE = math.log(1e-14)


def cloud(centre, n=2000, spread=0.004, seed=0):
    """`n` points inside one 0.04 x 0.04 bin of the default 100-bin histogram around `centre` (a bin centre)."""
    rng = np.random.default_rng(seed)
    return np.asarray(centre) + rng.uniform(-spread, spread, size=(n, 2))


# ---------------------------------------------------------------- histogram KL / JSD


def test_identical_samples_give_zero():
    x = np.random.default_rng(0).normal(size=(5000, 2))
    kl, jsd = histogram_kl_jsd(x, x.copy())
    assert kl == pytest.approx(0, abs=1e-9) and jsd == pytest.approx(0, abs=1e-9)
    kl, jsd = histogram_kl_jsd(torch.from_numpy(x).float(), torch.from_numpy(x).float())
    assert kl == pytest.approx(0, abs=1e-9) and jsd == pytest.approx(0, abs=1e-9)


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3000, 2)).astype(np.float32), rng.normal(0.3, size=(3000, 2)).astype(np.float32)
    assert histogram_kl_jsd(a, b) == pytest.approx(histogram_kl_jsd(torch.from_numpy(a), torch.from_numpy(b)))


def test_density_matches_numpy_density_and_drops_outside_points():
    rng = np.random.default_rng(2)
    x = rng.normal(scale=1.5, size=(4000, 2))  # a good share outside [-2, 2]^2
    ref, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=100, range=[[-2, 2], [-2, 2]], density=True)
    p = histogram_density(x)
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    assert p.sum() * 0.04**2 == pytest.approx(1.0)  # integrates to 1 over the square
    inside = np.all(np.abs(x) <= 2, axis=1).mean()
    p_all = histogram_density(x, normalize_by="all")
    assert p_all.sum() * 0.04**2 == pytest.approx(inside)


def test_outside_points_do_not_change_the_reference_estimate():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(3000, 2)) * 0.5, rng.normal(size=(3000, 2)) * 0.6
    far = np.full((3000, 2), 10.0)
    assert histogram_kl_jsd(real, np.concatenate([fake, far])) == pytest.approx(histogram_kl_jsd(real, fake))
    kl_all, _ = histogram_kl_jsd(real, np.concatenate([fake, far]), normalize_by="all")
    assert kl_all > histogram_kl_jsd(real, fake)[0]  # q halved: log 2 more per unit of p mass, roughly


def test_upper_edge_belongs_to_the_last_bin():
    p = histogram_density(np.array([[2.0, 2.0], [-2.0, -2.0]]), bins=4)
    assert p[-1, -1] == p[0, 0] == pytest.approx(1 / (2 * 1.0))


def test_no_point_inside_gives_zero_density():
    assert not histogram_density(np.full((5, 2), 7.0)).any()


def test_hand_computed_two_by_two():
    # 2 x 2 bins over [0, 2]^2: unit bins, so densities are count fractions.
    real = np.array([[0.5, 0.5]] * 3 + [[1.5, 1.5]])  # p = [[3/4, 0], [0, 1/4]]
    fake = np.array([[0.5, 0.5], [0.5, 1.5], [1.5, 1.5], [1.5, 1.5]])  # q = [[1/4, 1/4], [0, 1/2]]
    kl, jsd = histogram_kl_jsd(real, fake, bins=2, range_=(0, 2))
    log = math.log
    kl_hand = (0.75 * (log(0.75) - log(0.25)) + 0.25 * (log(0.25) - log(0.5))) / 2
    # m = [[1/2, 1/8], [0, 3/8]]; the bin where p = 0 but q > 0 brings log(0 + 1e-14)
    jsd_hand = 0.5 * (
        0.5 * ((log(0.5) - log(0.75)) + (log(0.5) - log(0.25)))
        + 0.125 * ((log(0.125) - LOG_EPS_VALUE) + (log(0.125) - log(0.25)))
        + 0.375 * ((log(0.375) - log(0.25)) + (log(0.375) - log(0.5)))
    ) / 2
    assert kl == pytest.approx(kl_hand, rel=1e-10)
    assert jsd == pytest.approx(jsd_hand, rel=1e-10)
    assert kl_jsd_from_densities([[0.75, 0], [0, 0.25]], [[0.25, 0.25], [0, 0.5]]) == pytest.approx((kl, jsd))


def test_disjoint_clouds_saturate():
    bins, area = 100, 0.04**2
    real = cloud((0.02, 0.02))  # the bin [0, 0.04)^2
    fake = cloud((1.02, -0.98), seed=1)
    kl, jsd = histogram_kl_jsd(real, fake)
    # Each cloud fills one bin: p = q = 1 / area there, 0 elsewhere; m = 1 / (2 area) on both bins.
    d = 1 / area
    kl_max = d * (math.log(d) - LOG_EPS_VALUE) / bins
    m = d / 2
    jsd_max = 0.5 * 2 * m * ((math.log(m) - math.log(d + LOG_EPS)) + (math.log(m) - LOG_EPS_VALUE)) / bins
    assert kl == pytest.approx(kl_max, rel=1e-9)
    assert jsd == pytest.approx(jsd_max, rel=1e-9)
    # = (1 / (2 area bins)) (log(1 / (4 area)) - log 1e-14): disjointness makes it independent of where fake sits
    assert jsd == pytest.approx((math.log(1 / (4 * area)) - LOG_EPS_VALUE) / (2 * area * bins), rel=1e-9)
    assert histogram_kl_jsd(real, cloud((-1.5, 1.5), seed=2)) == pytest.approx((kl, jsd))


def test_disjoint_is_the_worst_case_for_the_same_clouds():
    real = cloud((0.02, 0.02), n=4000)
    rng = np.random.default_rng(5)
    overlap = np.concatenate([cloud((0.02, 0.02), n=2000, seed=3), cloud((1.02, 1.02), n=2000, seed=4)])
    kl_d, jsd_d = histogram_kl_jsd(real, cloud((1.02, 1.02), n=4000, seed=6))
    kl_o, jsd_o = histogram_kl_jsd(real, overlap)
    kl_s, jsd_s = histogram_kl_jsd(real, real[rng.permutation(len(real))])
    assert jsd_s < jsd_o < jsd_d and kl_s < kl_o < kl_d


# ---------------------------------------------------------------- grid-normalized ELBO


def quadratic(points: torch.Tensor) -> torch.Tensor:
    return (points.double() ** 2).sum(1) + 0.5


def test_gnelbo_matches_an_independent_closed_form():
    real = torch.from_numpy(np.random.default_rng(0).normal(size=(3000, 2))).float()
    score = grid_normalized_elbo(quadratic, real, grid_size=1024, range_=(-2, 2))
    axis = np.linspace(-2.0, 2.0, 1024)
    grid_sum = 2 * 1024 * np.sum(axis**2) + 0.5 * 1024**2  # sum over (i, j) of a_i^2 + a_j^2 + 0.5
    e_real = (real.double().numpy() ** 2).sum(1) + 0.5
    expected = np.mean(e_real / (grid_sum + e_real.sum()))
    assert score == pytest.approx(expected, rel=1e-6)


def test_gnelbo_does_not_depend_on_the_batch_size():
    real = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    a = grid_normalized_elbo(quadratic, real, grid_size=300, range_=(-4, 4), batch_size=777)
    b = grid_normalized_elbo(quadratic, real, grid_size=300, range_=(-4, 4), batch_size=10**6)
    assert a == pytest.approx(b, rel=1e-12)


def test_gnelbo_grid_covers_the_square_with_its_endpoints():
    seen = []

    def record(points):
        seen.append(points.clone())
        return torch.ones(len(points))

    real = torch.zeros(5, 2)
    score = grid_normalized_elbo(record, real, grid_size=7, range_=(-3, 1), batch_size=10)
    grid = torch.cat(seen)[5:]
    assert len(grid) == 49 and grid.min() == -3 and grid.max() == 1
    assert len({tuple(p) for p in grid.tolist()}) == 49
    assert score == pytest.approx(1 / (49 + 5))  # a constant negative ELBO gives 1 / (grid points + real points)


def test_gnelbo_lower_for_a_model_that_fits_the_data():
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    real = centres[torch.randint(4, (2000,), generator=torch.Generator().manual_seed(0))]
    real = real + 0.05 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))

    def good(points):  # low negative ELBO near the data, high elsewhere
        return torch.cdist(points, centres).min(1).values ** 2 * 50 + 0.1

    def bad(points):  # high on the data, low elsewhere
        return 50 * torch.exp(-torch.cdist(points, centres).min(1).values ** 2 / 0.1) + 0.1

    def radial(points):  # low at the origin, where there are no data, but still lower on the data than on average
        return (points**2).sum(1) * 50 + 0.1

    def constant(points):
        return torch.full((len(points),), 3.0)

    kw = dict(grid_size=256, range_=(-2, 2))
    s_good, s_radial, s_const, s_bad = (grid_normalized_elbo(f, real, **kw) for f in (good, radial, constant, bad))
    assert s_good < s_radial < s_const < s_bad
    assert s_const == pytest.approx(1 / (256**2 + 2000))


def test_gnelbo_rejects_a_wrong_output_size():
    with pytest.raises(ValueError):
        grid_normalized_elbo(lambda p: p.sum(), torch.zeros(4, 2), grid_size=4)
    with pytest.raises(ValueError):
        grid_normalized_elbo(quadratic, torch.zeros(4, 3), grid_size=4)


# ---------------------------------------------------------------- Frechet distance


def test_frechet_equal_covariances_is_the_squared_mean_distance():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, -1.0, 0.5])
    sigma = np.diag([0.5, 2.0, 3.0])
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)
    full = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.7]])
    assert frechet_distance(mu1, full, mu2, full) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-7)


def test_frechet_commuting_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = np.array([0.5, 1.0, 2.0, 4.0]), np.array([2.0, 1.0, 0.25, 9.0])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(b)) == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


def test_frechet_singular_covariances_stay_finite():
    mu = np.zeros(3)
    s1 = np.diag([1.0, 0.0, 0.0])
    s2 = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # rank 1, orthogonal to s1
    value = frechet_distance(mu, s1, mu, s2)
    assert np.isfinite(value) and value == pytest.approx(np.trace(s1) + np.trace(s2), abs=1e-2)
    zero = np.zeros((3, 3))
    assert frechet_distance(np.ones(3), zero, mu, zero) == pytest.approx(3.0, abs=1e-4)


def test_frechet_shape_errors():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError):
        frechet_distance_from_features(np.zeros((1, 2)), np.zeros((5, 2)))


def test_frechet_from_features_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.5, -0.5])
    l1 = np.array([[1.0, 0, 0], [0.5, 1.0, 0], [0.2, -0.3, 0.8]])
    l2 = np.array([[1.5, 0, 0], [-0.2, 0.7, 0], [0.1, 0.4, 1.2]])
    s1, s2 = l1 @ l1.T, l2 @ l2.T
    expected = frechet_distance(mu1, s1, mu2, s2)
    x1 = mu1 + rng.normal(size=(200000, 3)) @ l1.T
    x2 = mu2 + rng.normal(size=(200000, 3)) @ l2.T
    assert frechet_distance_from_features(x1, x2) == pytest.approx(expected, rel=0.02)
    assert frechet_distance_from_features(x1, x1) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_from_features(torch.from_numpy(x1[:1000]), x2[:1000]) == pytest.approx(
        frechet_distance_from_features(x1[:1000], x2[:1000])
    )
