"""Reference hyper-parameters of the 2D toy benchmark, per dataset and method.

`beta_kl`, `beta_rec` and `beta_neg` are the Soft-IntroVAE 2D code's recommendations, which the AS-IntroVAE
reference reuses for 8 Gaussians. The IntroVAE margin has no reference value for these data: `margin = 2` nats is
this project's choice (the KL of real 2D data under the trained encoders is about 1-3 nats); override it with
`--margin`. The VAE uses `beta_kl` and `beta_rec` only.
"""

from typing import Dict

from .toy_data import TOY_DATASETS

_BETAS = {
    "8gaussians": dict(beta_kl=0.3, beta_rec=0.2, beta_neg=0.9),
    "2spirals": dict(beta_kl=0.5, beta_rec=0.2, beta_neg=1.0),
    "checkerboard": dict(beta_kl=0.1, beta_rec=0.2, beta_neg=0.2),
    "rings": dict(beta_kl=0.2, beta_rec=0.2, beta_neg=1.0),
}


def toy_hyperparameters(dataset: str, method: str) -> Dict:
    """`ObjectiveConfig` keyword arguments (plus `learning_rate`) for `method` on the toy `dataset`."""
    if dataset not in _BETAS:
        raise ValueError(f"dataset must be one of {TOY_DATASETS}, got {dataset!r}.")
    hp = dict(_BETAS[dataset], gamma_r=1e-8, learning_rate=2e-4)
    if method == "introvae":
        hp["margin"] = 2.0
    return hp
