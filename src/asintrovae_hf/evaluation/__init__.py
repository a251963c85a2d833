"""
Measuring a trained pipeline: the Frechet distance (`frechet.py`), the offline digits FID with its shipped
classifier (`digits_classifier.py`), FID, reconstruction error and class coverage of a saved pipeline
(`image_metrics.py`), the held-out protocol (`heldout.py`) with its statistics (`statistics.py`) and
out-of-distribution detection by ELBO (`ood.py`). A change to a metric or to what `scripts/evaluate.py`,
`scripts/ood.py` and the experiments (`asintrovae_hf.experiments`) report goes here.
"""
