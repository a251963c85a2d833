"""The objective registry: an objective registered from outside the package is trained by the training command."""

import json

import pytest
import torch

from asintrovae_hf.objectives import (IntrospectiveObjective, SoftIntroVAEObjective, get_objective,
                                      objective_dataset_defaults, objective_names, register_objective,
                                      unregister_objective)
from asintrovae_hf.training.args import parse_args
from asintrovae_hf.training.loop import main
from helpers import TINY, tiny_image_pipeline

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

# the divergences each encoder step computed, to show the command line trained this objective
DIVERGENCE_CALLS = []


class MeansOnlySoftIntroVAE(SoftIntroVAEObjective):
    """Soft-IntroVAE whose encoder scores reconstructions and fakes by `0.5 |mu|^2` only (the KL's mean part)."""

    name = "test-soft-introvae-means"
    display_name = "Soft-IntroVAE (means only)"
    description = "A Soft-IntroVAE variant registered by a test."
    defaults = {"digits": {"beta_neg": 2.0}}

    def encoder_divergences(self, kl_rec, kl_fake, rec_posterior, fake_posterior, c):
        div_rec = 0.5 * rec_posterior[0].pow(2).sum(1)
        div_fake = 0.5 * fake_posterior[0].pow(2).sum(1)
        DIVERGENCE_CALLS.append(float(div_rec.detach().mean()))
        return div_rec, div_fake, div_rec.mean() + div_fake.mean()  # logged as `dis_encoder`


@pytest.fixture
def means_only():
    register_objective(MeansOnlySoftIntroVAE)
    DIVERGENCE_CALLS.clear()
    yield MeansOnlySoftIntroVAE.name
    unregister_objective(MeansOnlySoftIntroVAE.name)
    DIVERGENCE_CALLS.clear()


def _without_beta_neg(args):
    i = args.index("--beta_neg")
    return args[:i] + args[i + 2:]


def test_a_registered_objective_trains_through_the_command_line(tmp_path, means_only):
    out = tmp_path / "run"
    assert main(_without_beta_neg(TINY) + ["--objective", means_only, "--max_train_steps", "2",
                                          "--output_dir", str(out)]) == 0
    assert len(DIVERGENCE_CALLS) == 2  # one encoder step per training step, through the new divergence
    summary = json.loads((out / "train_summary.json").read_text())
    losses = summary["final_losses"]
    # Soft-IntroVAE logs dis_encoder = 0; this objective logs its divergence there
    assert losses["dis_encoder"] > 0 and {"loss_encoder", "loss_decoder", "exp_elbo_rec", "c"} <= set(losses)
    assert (out / "model_index.json").exists()
    card = (out / "README.md").read_text()
    assert "Soft-IntroVAE (means only)" in card and "A Soft-IntroVAE variant registered by a test." in card
    # its digits defaults apply on the built-in digits
    assert parse_args(_without_beta_neg(TINY) + ["--objective", means_only]).objective.beta_neg == 2.0


def test_registration_is_read_at_call_time(means_only):
    assert means_only in objective_names() and get_objective(means_only) is MeansOnlySoftIntroVAE
    assert objective_dataset_defaults("digits")[means_only] == {"beta_neg": 2.0}
    with pytest.raises(ValueError, match="taken"):
        register_objective(MeansOnlySoftIntroVAE)
    unregister_objective(means_only)
    try:
        with pytest.raises(SystemExit):
            parse_args(TINY + ["--objective", means_only])
        with pytest.raises(ValueError, match="objective must be one of"):
            get_objective(means_only)
    finally:
        register_objective(MeansOnlySoftIntroVAE)  # the fixture unregisters it


def test_the_built_in_objectives_keep_their_names_and_order():
    assert objective_names()[:4] == ("as-introvae", "soft-introvae", "introvae", "vae")
    assert {n: get_objective(n).is_introspective for n in objective_names()[:4]} == {
        "as-introvae": True, "soft-introvae": True, "introvae": True, "vae": False}
    assert [n for n in objective_names()[:4] if get_objective(n).uses_c] == ["as-introvae"]
    assert issubclass(get_objective("as-introvae"), get_objective("soft-introvae"))


def test_as_introvae_at_c_1_is_soft_introvae():
    """AS-IntroVAE is Soft-IntroVAE plus its distance term, which has weight 0 at `c = 1`."""
    pipe = tiny_image_pipeline(size=8)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    z_f = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    losses = []
    for name in ("soft-introvae", "as-introvae"):
        objective = IntrospectiveObjective(objective=name, beta_neg=8.0)
        out = objective.encoder_step(pipe.encoder, pipe.decoder, x, z_f, 1.0, torch.Generator().manual_seed(2))
        loss, _ = objective.decoder_step(pipe.encoder, pipe.decoder, x, out, 1.0, torch.Generator().manual_seed(3))
        losses.append((out.loss, loss))
    assert torch.equal(losses[0][0], losses[1][0]) and torch.equal(losses[0][1], losses[1][1])
