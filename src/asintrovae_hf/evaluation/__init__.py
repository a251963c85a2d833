"""
Measuring a trained pipeline: the Frechet distance (`metrics.py`), the offline digits FID with its shipped
classifier (`digits_classifier.py`), FID, reconstruction error and class coverage of a saved pipeline
(`image_metrics.py`), out-of-distribution detection by ELBO (`ood.py`) and the summary of a robustness grid of runs
(`robustness_grid.py`). A change to a metric or to what `scripts/evaluate.py`, `scripts/ood.py` and the benchmarks
report goes here.
"""
