"""The 2D toy benchmark of the Soft-IntroVAE / AS-IntroVAE papers: data, the official loop's settings, the training
loop on vectors, and the estimators (histogram KL / JSD, grid-normalized ELBO)."""

from .data import TOY_DATASETS, TOY_EVAL_RANGES, sample_toy_data, toy_eval_range
from .hparams import toy_lr_milestones, toy_objective_defaults
from .metrics import grid_normalized_elbo, histogram_density, histogram_kl_jsd, kl_jsd_from_densities
from .training import negative_elbo_at_posterior_mean, sample_points, train_vector_model

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
