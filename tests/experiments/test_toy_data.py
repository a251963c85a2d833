"""The 2D toy samplers: shapes, reproducibility, the evaluation square, and each dataset's shape."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from asintrovae_hf.experiments.toy import TOY_DATASETS, TOY_EVAL_RANGES, sample_toy_data, toy_eval_range

N = 20000


def draw(name, n=N, seed=0):
    return sample_toy_data(name, n, generator=torch.Generator().manual_seed(seed)).double().numpy()


def test_names():
    assert TOY_DATASETS == ("8gaussians", "2spirals", "checkerboard", "rings")
    assert set(TOY_EVAL_RANGES) == set(TOY_DATASETS)


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("n", [1, 7, 1001])
def test_shape_and_dtype(name, n):
    x = sample_toy_data(name, n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_empty_and_negative(name):
    assert sample_toy_data(name, 0).shape == (0, 2)
    with pytest.raises(ValueError):
        sample_toy_data(name, -1)


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_reproducible_with_generator(name):
    a = sample_toy_data(name, 500, generator=torch.Generator().manual_seed(3))
    b = sample_toy_data(name, 500, generator=torch.Generator().manual_seed(3))
    c = sample_toy_data(name, 500, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_is_used_without_generator():
    torch.manual_seed(11)
    a = sample_toy_data("rings", 50)
    torch.manual_seed(11)
    b = sample_toy_data("rings", 50)
    assert torch.equal(a, b)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        sample_toy_data("moons", 10)
    for name in TOY_DATASETS:
        assert name in str(err.value)
    with pytest.raises(ValueError):
        toy_eval_range("moons")


def test_reference_spelling_is_accepted():
    a = sample_toy_data("8Gaussians", 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, sample_toy_data("8gaussians", 10, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_inside_the_evaluation_square(name):
    lo, hi = toy_eval_range(name)
    x = draw(name)
    inside = np.all((x >= lo) & (x <= hi), axis=1).mean()
    assert inside > 0.999


def test_evaluation_squares_follow_the_reference():
    # 8 Gaussians lies in [-2, 2]^2; the reference evaluates the others on [-4, 4]^2 and they need it.
    assert toy_eval_range("8gaussians") == (-2.0, 2.0)
    assert np.abs(draw("8gaussians")).max() < 1.6
    for name in ("2spirals", "checkerboard", "rings"):
        assert toy_eval_range(name) == (-4.0, 4.0)
        outside_small = (np.abs(draw(name)) > 2).any(axis=1).mean()
        assert outside_small > 0.2, name


def test_8gaussians_clusters():
    x = draw("8gaussians")
    angles = np.arange(8) * math.pi / 4
    centres = 2 * np.stack([np.cos(angles), np.sin(angles)], 1) / 1.414
    dist = np.linalg.norm(x[:, None, :] - centres[None], axis=2)
    nearest = dist.argmin(1)
    assert dist.min(1).max() < 0.1  # std 0.02 / 1.414 per axis: every point hugs a centre
    np.testing.assert_allclose(dist.min(1).std(), 0.0141 * math.sqrt(2 - math.pi / 2), rtol=0.05)  # Rayleigh
    np.testing.assert_allclose(np.bincount(nearest, minlength=8) / len(x), 1 / 8, atol=0.01)


def test_2spirals_arms():
    x = draw("2spirals")
    t = np.linspace(0, 3 * math.pi, 20000)
    arm = np.stack([-np.cos(t) * t, np.sin(t) * t], 1) / 3 + 0.25 / 3  # the uniform jitter's mean
    curve = np.concatenate([arm, -arm])
    side = np.concatenate([np.zeros(len(arm)), np.ones(len(arm))])
    dist, nearest = cKDTree(curve).query(x)
    assert (dist < 0.35).mean() > 0.99
    np.testing.assert_allclose(side[nearest].mean(), 0.5, atol=0.02)  # the two arms, equally
    assert np.linalg.norm(x, axis=1).max() < 3.9
    np.testing.assert_allclose(x.mean(0), 0, atol=0.05)  # point symmetric


def test_checkerboard_cells():
    x = draw("checkerboard")
    assert x.min() >= -4 and x.max() < 4
    cx, cy = np.floor(x[:, 0] / 2).astype(int), np.floor(x[:, 1] / 2).astype(int)
    assert np.all((cx + cy) % 2 == 0)  # only one colour of the 4 x 4 board
    cells = np.bincount((cx + 2) * 4 + (cy + 2), minlength=16)
    occupied = cells[cells > 0]
    assert len(occupied) == 8
    np.testing.assert_allclose(occupied / len(x), 1 / 8, atol=0.01)
    within = np.stack([x[:, 0] - 2 * cx, x[:, 1] - 2 * cy], 1)  # uniform inside each 2 x 2 cell
    np.testing.assert_allclose(within.mean(0), 1.0, atol=0.03)


def test_rings_radii():
    x = draw("rings")
    r = np.linalg.norm(x, axis=1)
    radii = np.array([0.75, 1.5, 2.25, 3.0])
    which = np.abs(r[:, None] - radii[None]).argmin(1)
    assert np.abs(r - radii[which]).max() < 0.45
    np.testing.assert_allclose(np.abs(r - radii[which]).std(), 0.08 * math.sqrt(1 - 2 / math.pi), rtol=0.1)
    np.testing.assert_allclose(np.bincount(which, minlength=4) / len(x), 0.25, atol=0.015)
    angle = np.arctan2(x[:, 1], x[:, 0])
    np.testing.assert_allclose([np.cos(angle).mean(), np.sin(angle).mean()], 0, atol=0.03)
