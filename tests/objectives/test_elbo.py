"""`objectives.elbo.negative_elbo`, the one ELBO: each caller's numbers, bit for bit, against the formula it had."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.objectives.elbo import negative_elbo
from asintrovae_hf.experiments.toy import negative_elbo_at_posterior_mean as toy_negative_elbo
from helpers import tiny_image_pipeline, tiny_vector_pipeline


def score_by_hand(pipe, x, num_samples, importance_weighted, seed):
    """`pipe.score`'s estimate as the pipeline wrote it before the ELBO had its own module (one batch)."""
    g = torch.Generator().manual_seed(seed)
    bernoulli = getattr(pipe.decoder.config, "output_activation", None) == "sigmoid"
    with torch.no_grad():
        mean, logvar = (t.float() for t in pipe.encoder(x))
        dims = x[0].numel()
        log_weights, nll = [], []
        for _ in range(num_samples):
            z = mean + torch.exp(0.5 * logvar) * randn_tensor(mean.shape, generator=g, dtype=mean.dtype)
            out = pipe.decoder(z).float().flatten(1)
            if bernoulli:
                log_px = (-F.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), x.flatten(1), reduction="none")).sum(1)
            else:
                log_px = -(x.flatten(1) - out).pow(2).sum(1) - 0.5 * dims * math.log(math.pi)
            nll.append(-log_px)
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)
            log_weights.append(log_px + log_pz - log_qz)
        if importance_weighted:
            return -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(num_samples))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return torch.stack(nll).mean(0) + kl


def bernoulli_pipeline():
    torch.manual_seed(1)
    kw = dict(sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, output_activation="sigmoid", **kw).eval())


@pytest.mark.parametrize("importance_weighted", [False, True])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_pipeline_score_is_the_formula_it_had(num_samples, importance_weighted):
    """Gaussian (variance 1/2, with its constant) and Bernoulli likelihoods; the ELBO and the IWAE bound."""
    cases = [(tiny_image_pipeline(channels=3), torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))),
             (bernoulli_pipeline(), torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))),
             (tiny_vector_pipeline(), torch.randn(7, 2, generator=torch.Generator().manual_seed(0)))]
    for pipe, x in cases:
        pipe.set_progress_bar_config(disable=True)
        got = pipe.score(x, num_samples=num_samples, importance_weighted=importance_weighted, batch_size=len(x),
                         generator=torch.Generator().manual_seed(5)).neg_elbo
        assert torch.equal(got, score_by_hand(pipe, x, num_samples, importance_weighted, seed=5))


@pytest.mark.parametrize("loss_type", ["mse", "l1", "bce"])
def test_toy_negative_elbo_is_the_formula_it_had(loss_type):
    """The toy benchmark's estimate: `z = mu`, the training losses' KL and reconstruction error, no constant."""
    pipe = tiny_vector_pipeline(hidden_dims=(16,))
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    x = x.sigmoid() if loss_type == "bce" else x
    with torch.no_grad():
        mu, logvar = pipe.encoder(x)
        x_rec = pipe.decoder(mu)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        err = {"mse": lambda: (x - x_rec).pow(2), "l1": lambda: (x - x_rec).abs(),
               "bce": lambda: F.binary_cross_entropy(x_rec.clamp(1e-6, 1 - 1e-6), x, reduction="none")}[loss_type]()
        expected = kl + err.flatten(1).sum(dim=1)
    assert torch.equal(toy_negative_elbo(pipe.encoder, pipe.decoder, x, loss_type), expected)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        toy_negative_elbo(pipe.encoder, pipe.decoder, x, "huber")


def test_the_function_refuses_what_it_cannot_estimate():
    x, mean, logvar = torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 1)
    decode = lambda z: torch.zeros(2, 3)  # noqa: E731
    with pytest.raises(ValueError, match="num_samples must be 1"):
        negative_elbo(x, mean, logvar, decode, sample_posterior=False, num_samples=2)
    with pytest.raises(ValueError, match="importance-weighted bound needs posterior samples"):
        negative_elbo(x, mean, logvar, decode, sample_posterior=False, importance_weighted=True)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        negative_elbo(x, mean, logvar, decode, likelihood="laplace")
    # the closed form: a posterior equal to the prior and a perfect decoder leave the Gaussian's constant
    assert torch.equal(negative_elbo(x, mean, logvar, decode, sample_posterior=False),
                       torch.full((2,), 0.5 * 3 * math.log(math.pi)))


def test_each_former_formula_on_spread_posteriors():
    """Posteriors far from the prior, where the two KL forms (the score's and the training loss's) round apart."""
    g = torch.Generator().manual_seed(0)
    mean, logvar = 2 * torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    weight = torch.randn(8, 12, generator=g)
    x = torch.rand(64, 12, generator=g)
    decode = lambda z: torch.sigmoid(z @ weight)  # noqa: E731
    dims = x[0].numel()
    for likelihood, importance_weighted in [("gaussian", False), ("gaussian", True), ("bce", False), ("bce", True)]:
        got = negative_elbo(x, mean, logvar, decode, likelihood=likelihood, num_samples=3,
                            importance_weighted=importance_weighted, generator=torch.Generator().manual_seed(9))
        draws = torch.Generator().manual_seed(9)
        log_weights, nll = [], []
        for _ in range(3):
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=draws)
            out = decode(z)
            if likelihood == "bce":
                log_px = (-F.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), x, reduction="none")).sum(1)
            else:
                log_px = -(x - out).pow(2).sum(1) - 0.5 * dims * math.log(math.pi)
            nll.append(-log_px)
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)
            log_weights.append(log_px + log_pz - log_qz)
        if importance_weighted:
            expected = -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(3))
        else:
            expected = torch.stack(nll).mean(0) + 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        assert torch.equal(got, expected), (likelihood, importance_weighted)
    # the toy benchmark's: z = mu, the training loss's KL and squared error
    from asintrovae_hf.objectives.losses import kl_divergence

    got = negative_elbo(x, mean, logvar, decode, likelihood="mse", sample_posterior=False, kl=kl_divergence)
    expected = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp(), dim=1) + (x - decode(mean)).pow(2).sum(1)
    assert torch.equal(got, expected)
