"""The robustness-grid summary shared by the toy and digits benchmarks."""

import math

import numpy as np
from PIL import Image

from asintrovae_hf.experiments.images.robustness_grid import grid_cells, grid_markdown, grid_summary, save_grid_heatmap


def _records():
    values = {("a", 1, 10): 10.0, ("a", 1, 20): 14.0, ("a", 2, 10): 25.0, ("a", 2, 20): math.nan,
              ("b", 1, 10): 12.0, ("b", 1, 20): 16.0, ("b", 2, 10): 18.0, ("b", 2, 20): 30.0}
    records = [{"name": n, "overrides": {"beta_kl": kl, "beta_neg": neg}, "fid": v}
               for (n, kl, neg), v in values.items()]
    # a second seed of one cell is averaged; a record without a grid is ignored
    records.append({"name": "b", "overrides": {"beta_kl": 1, "beta_neg": 10}, "fid": 14.0})
    records.append({"name": "b", "fid": 1.0})
    return records


def test_cells_average_seeds_and_keep_nan():
    cells = grid_cells(_records(), "fid")
    assert cells["b"][(("beta_kl", 1), ("beta_neg", 10))] == 13.0
    assert math.isnan(cells["a"][(("beta_kl", 2), ("beta_neg", 20))])
    assert len(cells["a"]) == len(cells["b"]) == 4


def test_summary_counts_near_cells_and_collapses_against_the_best_of_all():
    rows = {r["name"]: r for r in grid_summary(grid_cells(_records(), "fid"), near=1.5, collapse=2.0)}
    # the best cell of all is a's 10.0: near means <= 15, collapsed means > 20 or NaN
    assert rows["a"]["best"] == 10.0 and rows["a"]["near_overall"] == 2 and rows["a"]["near_own"] == 2
    assert rows["b"]["best"] == 13.0 and rows["b"]["near_overall"] == 1 and rows["b"]["near_own"] == 3
    assert rows["a"]["collapsed"] == [(("beta_kl", 2), ("beta_neg", 10)), (("beta_kl", 2), ("beta_neg", 20))]
    assert rows["b"]["collapsed"] == [(("beta_kl", 2), ("beta_neg", 20))]


def test_markdown_and_heatmap(tmp_path):
    cells = grid_cells(_records(), "fid")
    text = grid_markdown(cells, "FID", "digits", near=1.5, collapse=2.0)
    assert "| 2 | 20 | nan | 30.00 |" in text
    assert "| a | 4 | 10.00 | 2/4 | 2/4 | beta_kl=2, beta_neg=10; beta_kl=2, beta_neg=20 |" in text
    path = tmp_path / "grid.png"
    assert save_grid_heatmap(cells, str(path), "FID", "digits")
    image = np.asarray(Image.open(path))
    assert image.shape[0] > 100 and len(np.unique(image.reshape(-1, 3), axis=0)) > 8  # coloured cells drawn
    assert not save_grid_heatmap({"a": {(("beta_kl", 1),): 1.0}}, str(tmp_path / "one.png"), "FID", "x")
