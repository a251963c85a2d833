"""
Measuring a trained pipeline: the Frechet distance (`metrics.py`), the offline digits FID with its shipped
classifier (`digits_classifier.py`), FID, reconstruction error and class coverage of a saved pipeline
(`image_metrics.py`) and out-of-distribution detection by ELBO (`ood.py`). A change to a metric or to what
`scripts/evaluate.py` and `scripts/ood.py` report goes here.
"""
