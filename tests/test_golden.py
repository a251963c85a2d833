"""Golden slices, in diffusers' style: a fixed seed gives a fixed small slice of the output, stored here. An
unintended numerical change anywhere on the path (initialisation, layers, objective, optimizer step, pipeline
post-processing) fails these; an intended one updates the numbers in the same commit, with the reason."""

import numpy as np
import pytest
import torch

from asintrovae_hf import IntrospectiveObjective, ObjectiveConfig, train_step
from helpers import tiny_image_pipeline

ATOL = 1e-4  # float32 results may differ in the last digits between CPUs


def test_sample_and_reconstruct_slices():
    pipe = tiny_image_pipeline(channels=1)
    sample = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    expected = np.array([0.178440, 0.206355, 0.089725, 0.100356, 0.109005, 0.019807, 0.023647, 0.0, 0.0])
    np.testing.assert_allclose(sample[0, -3:, -3:, -1].flatten(), expected, atol=ATOL, rtol=0)
    x = torch.linspace(0, 1, 2 * 16 * 16).reshape(2, 1, 16, 16)
    recon = pipe.reconstruct(x, output_type="np").images
    expected = np.array([0.006734, 0.022484, 0.013741, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(recon[1, :3, :3, -1].flatten(), expected, atol=ATOL, rtol=0)


GOLDEN_TRAINING = {
    "as-introvae (reference)": (
        dict(objective="as-introvae", preset="reference"),
        [0.237574, 0.306885, 0.112572, 0.228456, 0.221539, 0.006176, 0.155986, 0.042874, 0.0],
        {"loss_rec": 77.472954, "kl_real": 1.286144, "exp_elbo_rec": 0.479934, "exp_elbo_fake": 0.528084,
         "dis_encoder": 0.741081, "loss_encoder": 0.559657, "kl_rec_decoder": 0.864304, "loss_rr": 104.739243,
         "dis_decoder": 0.061266, "loss_decoder": 0.303711},
    ),
    # the package's default AS-IntroVAE (the recommended preset: no squash; c is given, so the schedule is not used)
    "as-introvae (recommended)": (
        dict(objective="as-introvae", preset="recommended"),
        [0.235456, 0.306007, 0.112567, 0.228394, 0.221400, 0.005025, 0.154908, 0.041909, 0.0],
        {"loss_rec": 79.487907, "kl_real": 1.390901, "exp_elbo_rec": 0.463953, "exp_elbo_fake": 0.523874,
         "dis_encoder": 1.037462, "loss_encoder": 0.562889, "kl_rec_decoder": 1.560255, "loss_rr": 108.427589,
         "dis_decoder": 0.111288, "loss_decoder": 0.312397},
    ),
    "soft-introvae": (
        dict(objective="soft-introvae", preset="reference", detach_rec_target=True),
        [0.235970, 0.305911, 0.112268, 0.230455, 0.221506, 0.004549, 0.156828, 0.041916, 0.0],
        {"loss_rec": 79.869453, "kl_real": 1.434271, "exp_elbo_rec": 0.459538, "exp_elbo_fake": 0.515064,
         "loss_encoder": 0.561243, "kl_rec_decoder": 1.676772, "loss_rr": 105.831085, "loss_decoder": 0.318343},
    ),
}


@pytest.mark.parametrize("name", list(GOLDEN_TRAINING))
def test_two_training_steps_slices(name):
    """Two `train_step`s of the tiny conv models (batch of 2, c = 0.3, Adam 1e-3), then a sample."""
    options, expected_slice, expected_terms = GOLDEN_TRAINING[name]
    pipe = tiny_image_pipeline(channels=1)
    encoder, decoder = pipe.encoder.train(), pipe.decoder.train()
    options = dict(options)
    config = ObjectiveConfig.from_preset(options.pop("preset"), beta_neg=8.0, **options)
    opt_e = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    x = torch.linspace(0, 1, 2 * 16 * 16).reshape(2, 1, 16, 16)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        terms = train_step(IntrospectiveObjective(config), encoder, decoder, opt_e, opt_d, x, 4, c=0.3,
                           generator=generator)
    for key, value in expected_terms.items():
        assert float(terms[key]) == pytest.approx(value, rel=1e-4, abs=1e-6), key
    sample = pipe(batch_size=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_allclose(sample[0, -3:, -3:, -1].flatten(), expected_slice, atol=ATOL, rtol=0)
