"""
The 2D toy comparison of the Soft-IntroVAE / AS-IntroVAE papers: data (`data.py`), the official loop's settings
(`hparams.py`), the training loop on vectors (`vector_training.py`) and its checkpoints (`vector_checkpoints.py`),
the estimators (`metrics.py`: histogram KL / JSD, grid-normalized ELBO, mode coverage) and the runs, records, tables
and figures of `asintrovae-toy2d` (`comparison.py`).
"""

from .data import TOY_DATASETS, TOY_EVAL_RANGES, sample_toy_data, toy_eval_range
from .hparams import toy_lr_milestones, toy_objective_defaults
from .metrics import grid_normalized_elbo, histogram_density, histogram_kl_jsd, kl_jsd_from_densities
from .vector_training import negative_elbo_at_posterior_mean, sample_points, train_vector_model

__all__ = [
    "TOY_DATASETS",
    "TOY_EVAL_RANGES",
    "grid_normalized_elbo",
    "histogram_density",
    "histogram_kl_jsd",
    "kl_jsd_from_densities",
    "negative_elbo_at_posterior_mean",
    "sample_points",
    "sample_toy_data",
    "toy_eval_range",
    "toy_lr_milestones",
    "toy_objective_defaults",
    "train_vector_model",
]
