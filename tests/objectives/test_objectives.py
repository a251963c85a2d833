"""The four objectives against the formulas of docs/algorithm.md, written out by hand here (float64, tiny networks)."""

import math

import pytest
import torch

from asintrovae_hf import (
    AsIntroVAEVectorDecoder,
    AsIntroVAEVectorEncoder,
    IntrospectiveObjective,
    ObjectiveConfig,
    kl_divergence,
    reconstruction_error,
    train_step,
    weight_schedule,
)

D, Z, B = 3, 2, 4


def tiny_networks(seed=0):
    torch.manual_seed(seed)
    encoder = AsIntroVAEVectorEncoder(in_features=D, latent_dim=Z, hidden_dims=(5,)).double()
    decoder = AsIntroVAEVectorDecoder(out_features=D, latent_dim=Z, hidden_dims=(5,)).double()
    return encoder, decoder


def fixed_batch():
    x = torch.linspace(-1, 1, B * D, dtype=torch.float64).reshape(B, D)
    z_f = torch.linspace(-1.5, 1.0, B * Z, dtype=torch.float64).reshape(B, Z).flip(0)
    return x, z_f


# ---- the formulas, by hand ------------------------------------------------------------------------------------


def hand_kl(mu, logvar):
    return torch.stack([-0.5 * sum(1 + logvar[b, d] - mu[b, d] ** 2 - math.exp(logvar[b, d]) for d in range(Z)) for b in range(len(mu))])


def hand_sq_err(a, b):
    return torch.stack([sum((a[i, j] - b[i, j]) ** 2 for j in range(a.shape[1])) for i in range(len(a))])


def hand_as(mu_a, lv_a, mu_b, lv_b, reduction):
    def R(mu_u, lv_u, mu_v, lv_v):
        total, count = 0.0, 0
        for i in range(len(mu_u)):
            for j in range(len(mu_v)):
                for d in range(Z):
                    s = math.exp(lv_u[i, d]) + math.exp(lv_v[j, d])
                    total += math.exp(-0.5 * (mu_u[i, d] - mu_v[j, d]) ** 2 / s) / math.sqrt(s)
                    count += 1
        return total if reduction == "sum" else total / count

    return R(mu_a, lv_a, mu_a, lv_a) + R(mu_b, lv_b, mu_b, lv_b) - 2 * R(mu_a, lv_a, mu_b, lv_b)


def E(encoder, x):
    mu, logvar = encoder.net(x).chunk(2, dim=1)
    return mu.detach(), logvar.detach()


def G(decoder, z):
    return decoder.net(z).detach()


def reparam(mu, logvar, gen):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, dtype=mu.dtype)


def hand_encoder_loss(cfg, encoder, decoder, x, z_f, c, gen):
    s = 1.0 / D
    sq = torch.tanh if (cfg.squash and cfg.objective == "as-introvae") else (lambda t: t)
    fake = G(decoder, z_f)
    mu, logvar = E(encoder, x)
    rec = G(decoder, reparam(mu, logvar, gen))
    L_rec = hand_sq_err(x, rec).mean()
    KL_real = hand_kl(mu, logvar).mean()
    mu_r, lv_r = E(encoder, rec)
    mu_f, lv_f = E(encoder, fake)
    if cfg.objective == "introvae":
        kr, kf = hand_kl(mu_r, lv_r).mean(), hand_kl(mu_f, lv_f).mean()
        return s * (cfg.beta_rec * L_rec + cfg.beta_kl * KL_real) + s * cfg.beta_neg * (
            max(cfg.margin - kr, 0) + max(cfg.margin - kf, 0)
        ) / 2
    rr = G(decoder, reparam(mu_r, lv_r, gen))
    rf = G(decoder, reparam(mu_f, lv_f, gen))
    KL_r, KL_f = hand_kl(mu_r, lv_r), hand_kl(mu_f, lv_f)
    R_r, R_f = hand_sq_err(rec, rr), hand_sq_err(fake, rf)
    dis = hand_as(sq(mu_r), sq(lv_r), sq(mu_f), sq(lv_f), cfg.encoder_reduction) * cfg.dis_scale if c < 1 else 0.0
    exp_r = torch.exp(-2 * s * (cfg.beta_rec * R_r + cfg.beta_neg * (c * KL_r + (1 - c) * dis))).mean()
    exp_f = torch.exp(-2 * s * (cfg.beta_rec * R_f + cfg.beta_neg * (c * KL_f + (1 - c) * dis))).mean()
    return s * (cfg.beta_rec * L_rec + cfg.beta_kl * KL_real) + 0.25 * (exp_r + exp_f)


def hand_decoder_loss(cfg, encoder, decoder, x, z_f, c, gen_enc, gen_dec):
    s = 1.0 / D
    sq = torch.tanh if (cfg.squash and cfg.objective == "as-introvae") else (lambda t: t)
    fake = G(decoder, z_f)
    mu, logvar = E(encoder, x)
    rec = G(decoder, reparam(mu, logvar, gen_enc))  # z from the encoder step's first draw
    L_rec = hand_sq_err(x, rec).mean()
    mu_r, lv_r = E(encoder, rec)
    mu_f, lv_f = E(encoder, fake)
    if cfg.objective == "introvae":
        return s * (cfg.beta_rec * L_rec + 0.5 * cfg.beta_kl * (hand_kl(mu_r, lv_r).mean() + hand_kl(mu_f, lv_f).mean()))
    rr = G(decoder, reparam(mu_r, lv_r, gen_dec))
    rf = G(decoder, reparam(mu_f, lv_f, gen_dec))
    L_rr, L_ff = hand_sq_err(rec, rr).mean(), hand_sq_err(fake, rf).mean()
    KL_r, KL_f = hand_kl(sq(mu_r), sq(lv_r)).mean(), hand_kl(sq(mu_f), sq(lv_f)).mean()
    dis = hand_as(sq(mu_r), sq(lv_r), sq(mu_f), sq(lv_f), cfg.decoder_reduction) * cfg.dis_scale if c < 1 else 0.0
    return s * (
        cfg.beta_rec * L_rec
        + 0.5 * cfg.beta_kl * (c * (KL_r + KL_f) + (1 - c) * dis)
        + 0.5 * cfg.gamma_r * cfg.beta_rec * (L_rr + L_ff)
    )


CASES = [
    dict(objective="as-introvae", beta_rec=0.2, beta_kl=0.3, beta_neg=0.9, gamma_r=0.5, squash=True),
    dict(objective="as-introvae", beta_rec=0.2, beta_kl=0.3, beta_neg=0.9, gamma_r=0.5, squash=False,
         encoder_reduction="mean", decoder_reduction="sum", dis_scale=0.1),
    dict(objective="soft-introvae", beta_rec=0.7, beta_kl=1.3, beta_neg=2.0, gamma_r=0.5),
    dict(objective="introvae", beta_rec=1.0, beta_kl=0.5, beta_neg=2.0, margin=3.0),
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: f"{k['objective']}-squash{k.get('squash')}")
@pytest.mark.parametrize("c", [0.3, 1.0])
def test_encoder_and_decoder_losses_match_hand_computation(kwargs, c):
    cfg = ObjectiveConfig(**kwargs)
    objective = IntrospectiveObjective(cfg)
    encoder, decoder = tiny_networks()
    x, z_f = fixed_batch()
    c_eff = c if cfg.objective == "as-introvae" else 1.0

    gen = torch.Generator().manual_seed(7)
    out = objective.encoder_step(encoder, decoder, x, z_f, c, gen)
    loss_d, _ = objective.decoder_step(encoder, decoder, x, out, c, gen)

    hand_gen = torch.Generator().manual_seed(7)
    expected_e = hand_encoder_loss(cfg, encoder, decoder, x, z_f, c_eff, hand_gen)
    # The decoder step draws after the encoder step's draws; replay the encoder step's z with a fresh generator.
    gen_enc = torch.Generator().manual_seed(7)
    expected_d = hand_decoder_loss(cfg, encoder, decoder, x, z_f, c_eff, gen_enc, hand_gen)

    torch.testing.assert_close(out.loss.detach(), torch.as_tensor(expected_e, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss_d.detach(), torch.as_tensor(expected_d, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_vae_loss_matches_hand_computation():
    encoder, decoder = tiny_networks()
    x, _ = fixed_batch()
    objective = IntrospectiveObjective(objective="vae", beta_rec=0.4, beta_kl=2.0)
    loss, terms = objective.vae_loss(encoder, decoder, x, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    mu, logvar = E(encoder, x)
    rec = G(decoder, reparam(mu, logvar, gen))
    expected = 0.4 * hand_sq_err(x, rec).mean() + 2.0 * hand_kl(mu, logvar).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-10, atol=1e-12)
    assert set(terms) == {"loss", "loss_rec", "kl_real"}


def test_the_adversarial_signal_depends_on_c_only_for_as_introvae():
    encoder, decoder = tiny_networks()
    x, z_f = fixed_batch()
    for name, should_differ in [("as-introvae", True), ("soft-introvae", False)]:
        objective = IntrospectiveObjective(objective=name, beta_neg=0.9)
        losses = [objective.encoder_step(encoder, decoder, x, z_f, c, torch.Generator().manual_seed(1)).loss for c in (0.2, 1.0)]
        assert (not torch.allclose(losses[0], losses[1])) == should_differ


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


class RecordingAdam(torch.optim.Adam):
    """Adam that records, at each `step`, which parameters of two modules had gradients."""

    def __init__(self, params, watch, log, name):
        super().__init__(params, lr=1e-2)
        self.watch, self.log, self.name = watch, log, name

    def step(self, closure=None):
        self.log.append((self.name, {k: [p.grad is not None for p in m.parameters()] for k, m in self.watch.items()},
                         {k: _snapshot(m) for k, m in self.watch.items()}))
        return super().step(closure)


@pytest.mark.parametrize("objective_name", ["as-introvae", "soft-introvae", "introvae"])
def test_one_iteration_updates_only_the_network_of_each_step(objective_name):
    encoder, decoder = tiny_networks()
    encoder, decoder = encoder.float(), decoder.float()
    x = torch.randn(8, D)
    start = {"encoder": _snapshot(encoder), "decoder": _snapshot(decoder)}
    log = []
    watch = {"encoder": encoder, "decoder": decoder}
    opt_e = RecordingAdam(encoder.parameters(), watch, log, "encoder")
    opt_d = RecordingAdam(decoder.parameters(), watch, log, "decoder")
    objective = IntrospectiveObjective(objective=objective_name, beta_neg=0.9)
    terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, Z, c=0.4, generator=torch.Generator().manual_seed(0))

    (name_e, grads_e, before_e), (name_d, grads_d, before_d) = log
    assert (name_e, name_d) == ("encoder", "decoder")
    # Encoder step: only encoder gradients exist, and nothing has moved yet.
    assert all(grads_e["encoder"]) and not any(grads_e["decoder"])
    assert _same(before_e["encoder"], start["encoder"]) and _same(before_e["decoder"], start["decoder"])
    # Decoder step: the encoder has moved, the decoder not yet; only decoder gradients exist.
    assert not _same(before_d["encoder"], start["encoder"]) and _same(before_d["decoder"], start["decoder"])
    assert all(grads_d["decoder"]) and not any(grads_d["encoder"])
    # After the iteration the decoder has moved and the encoder kept its encoder-step update.
    assert not _same(_snapshot(decoder), start["decoder"])
    assert _same(_snapshot(encoder), before_d["encoder"])
    assert all(torch.isfinite(v).all() for v in terms.values())


def test_vae_step_updates_both_networks_together():
    encoder, decoder = tiny_networks()
    start_e, start_d = _snapshot(encoder), _snapshot(decoder)
    opt_e = torch.optim.Adam(encoder.parameters(), 1e-2)
    opt_d = torch.optim.Adam(decoder.parameters(), 1e-2)
    objective = IntrospectiveObjective(objective="as-introvae")
    terms = train_step(objective, encoder, decoder, opt_e, opt_d, torch.randn(8, D, dtype=torch.float64), Z, vae_step=True)
    assert not _same(_snapshot(encoder), start_e) and not _same(_snapshot(decoder), start_d)
    assert set(terms) == {"loss", "loss_rec", "kl_real"}


def test_losses_are_finite_under_bf16_autocast():
    from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder

    torch.manual_seed(0)
    enc = AsIntroVAEEncoder(in_channels=1, sample_size=16, latent_dim=8, block_out_channels=(8, 16))
    dec = AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=8, block_out_channels=(8, 16))
    opt_e, opt_d = torch.optim.Adam(enc.parameters()), torch.optim.Adam(dec.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = train_step(IntrospectiveObjective(), enc, dec, opt_e, opt_d, torch.rand(4, 1, 16, 16), 8, c=0.5)
    assert all(torch.isfinite(v).all() and v.dtype != torch.bfloat16 for v in terms.values())


def test_kl_and_reconstruction_error_per_sample():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    expected = torch.tensor([0.0, -0.5 * ((1 + math.log(2) - 1 - 2) + (1 + 0 - 4 - 1))])
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2) * 0.5
    torch.testing.assert_close(reconstruction_error(a, b, "mse"), torch.full((2,), 1.0))
    torch.testing.assert_close(reconstruction_error(a, b, "l1"), torch.full((2,), 2.0))
    torch.testing.assert_close(reconstruction_error(a, b, "bce"), torch.full((2,), 4 * math.log(2.0)))
    with pytest.raises(ValueError, match=r"loss_type must be one of .*'mse'.*got 'l3'"):
        reconstruction_error(a, b, "l3")


def test_weight_schedule():
    assert weight_schedule(0, 100, "linear") == 0.0
    assert weight_schedule(10, 100, "linear") == pytest.approx(0.5)
    assert weight_schedule(30, 100, "linear") == 1.0
    assert weight_schedule(10, 100, "tanh") == pytest.approx(math.tanh(0.5))
    assert weight_schedule(1000, 100, "tanh") == pytest.approx(math.tanh(50.0))
    with pytest.raises(ValueError, match="schedule must be one of"):
        weight_schedule(1, 10, "cosine")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(objective="wgan"), r"objective must be one of \('as-introvae'.*got 'wgan'"),
        (dict(encoder_reduction="max"), r"encoder_reduction must be one of \('sum', 'mean'\), got 'max'"),
        (dict(loss_type="huber"), r"loss_type must be one of"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**kwargs)
