"""Settings of the official Soft-IntroVAE 2D loop, which the AS-IntroVAE paper's toy experiment follows.

Per dataset, `beta_kl`, `beta_rec` and `beta_neg` are the recommendations in the official 2D code's `main.py`. The
loop: batch 512, Adam at 2e-4 for both networks, 30,000 iterations of which the first 2,000 train a plain VAE, and
both learning rates multiplied by 0.1 at iterations 10,000 and 15,000 (`MultiStepLR`, stepped every iteration,
warm-up included). The networks: an input `Linear`, `n_layers = 3` hidden `Linear` layers and an output `Linear`, each
but the last followed by ReLU, all 256 wide, i.e. `hidden_dims = (256, 256, 256, 256)` here. The IntroVAE margin has no reference value for these data: `margin = 2` nats is this project's
choice (the KL of real 2D data under the trained encoders is about 1-3 nats). The VAE uses `beta_kl` and `beta_rec`.
"""

from typing import Dict, Tuple

from ..objectives.registry import get_objective
from .data import canonical_name

TOY_BETAS = {
    "8gaussians": dict(beta_kl=0.3, beta_rec=0.2, beta_neg=0.9),
    "2spirals": dict(beta_kl=0.5, beta_rec=0.2, beta_neg=1.0),
    "checkerboard": dict(beta_kl=0.1, beta_rec=0.2, beta_neg=0.2),
    "rings": dict(beta_kl=0.2, beta_rec=0.2, beta_neg=1.0),
}
NUM_ITER = 30_000
NUM_VAE_STEPS = 2_000
BATCH_SIZE = 512
LEARNING_RATE = 2e-4
LR_MILESTONES = (10_000, 15_000)
LR_GAMMA = 0.1
HIDDEN_DIMS = (256, 256, 256, 256)  # the official `SoftIntroVAESimple(n_layers=3, num_hidden=256)`


def toy_objective_defaults(dataset: str, method: str) -> Dict:
    """`ObjectiveConfig` fields of the official 2D loop for `method` on the toy `dataset`, with the objective's own
    defaults on the toy data (its registered `defaults["toy2d"]`)."""
    hp = dict(TOY_BETAS[canonical_name(dataset)], gamma_r=1e-8, num_vae_steps=NUM_VAE_STEPS)
    return {**hp, **get_objective(method).defaults.get("toy2d", {})}


def toy_lr_milestones(num_iter: int) -> Tuple[int, ...]:
    """
    The learning-rate milestones for a run of `num_iter` iterations: the official `(10000, 15000)` at the official
    30,000, and the same fractions (1/3 and 1/2 of the run) at other budgets.
    """
    return tuple(round(m * num_iter / NUM_ITER) for m in LR_MILESTONES)
