"""Out-of-distribution detection: the AUROC, the offline sets, and the script."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asintrovae_hf.evaluation.ood import OOD_SETS, auroc, evaluate_ood, make_ood_set
from helpers import load_script, tiny_image_pipeline


def test_auroc_is_the_rank_statistic():
    rng = np.random.default_rng(0)
    inside, outside = rng.normal(0, 1, 200), rng.normal(1, 1, 150)
    outside[:10] = inside[:10]  # ties
    expected = roc_auc_score(np.r_[np.zeros(200), np.ones(150)], np.r_[inside, outside])
    assert auroc(inside, outside) == pytest.approx(expected, abs=1e-12)
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0 and auroc([1, 1], [1]) == 0.5


@pytest.mark.parametrize("name", OOD_SETS)
def test_ood_sets_are_reproducible_8x8_images(name):
    a, b = make_ood_set(name, 30, seed=1), make_ood_set(name, 30, seed=1)
    assert len(a) == 30 and all(im.size == (8, 8) and im.mode == "L" for im in a)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert len({np.asarray(im).tobytes() for im in a}) > 1


def test_shifted_digit_sets_are_the_digits_transformed():
    from asintrovae_hf.evaluation.ood import digits_images

    digits = {np.asarray(im).tobytes() for im in digits_images()}
    for name, undo in (("inverted", lambda a: 255 - a), ("mirrored", np.fliplr), ("rotated", lambda a: np.rot90(a, -1))):
        images = make_ood_set(name, 20, seed=3)
        assert all(np.ascontiguousarray(undo(np.asarray(im))).tobytes() in digits for im in images), name


def test_evaluate_and_script(tmp_path):
    pipe = tiny_image_pipeline(channels=1, size=8, block_out_channels=(8,))
    pipe.set_progress_bar_config(disable=True)
    results = evaluate_ood(pipe, ["noise", "inverted"], count=20, num_samples=2)
    assert set(results) == {"digits", "noise", "inverted"}
    assert 0 <= results["noise"]["auroc_elbo"] <= 1 and results["digits"]["count"] == 1797
    pipe.save_pretrained(tmp_path / "pipe")
    script = load_script("ood")
    assert script.main(["--pipeline", str(tmp_path / "pipe"), "--sets", "blank", "--count", "10", "--num_samples",
                        "1", "--output", str(tmp_path / "ood.json")]) == 0
    saved = json.loads((tmp_path / "ood.json").read_text())
    assert set(saved["results"]) == {"digits", "blank"}
    assert script.main(["--pipeline", str(tmp_path / "missing")]) == 1
