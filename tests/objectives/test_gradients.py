"""Gradients of the training objectives against a literal re-implementation of docs/algorithm.md (float64, tiny nets).

`test_objectives.py` compares detached loss values, so a missing (or extra) `.detach()` in the objective code goes
unnoticed there. Here the gradients the package computes are compared with those of a reference written below from
docs/algorithm.md (Eq. 6-7 and 13-17) with plain autograd: its own `kl`,
`rec_err`, `reparam` (fed the same `eps` the package draws, replayed from a generator with the same seed) and a
naive broadcast AS-Distance. Nothing of the package is used but the models and the entry points under test.

- `L_E` is compared as a function of *all* parameters (encoder and decoder). The spec's detaches define it fully:
  its decoder gradient comes from `L_rec` and `G(z_y)` only (plus the attached `R_rec` target in the reference-code
  variant), never through `E(rec)`, `E(fake)` or the `R_fake` target.
- `L_G` is compared on the decoder parameters, after the encoder update, as in the real iteration. (The package's
  `L_G` reuses the encoder step's `rec = G(z)`, whose graph still reaches the encoder through `z` where the spec
  writes `G(z.detach())`; `train_step` only backpropagates `L_G` into the decoder, so only that gradient is spec.)
- The conv models run in train mode: BatchNorm normalises with the statistics of each forward's batch, so the
  outputs (and gradients) do not depend on the running buffers. Package and reference get deep copies of one
  initial state and forward the same batches; the running buffers may end in different states (the reference
  forwards `G(z_f)` and `G(z)` again in the decoder step), which no train-mode output reads.

`scripts/check_detach_mutations.py` proves these tests fail when any single `.detach()` of the objective code is
removed.
"""

import copy
import math

import pytest
import torch

from asintrovae_hf import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEVectorDecoder,
    AsIntroVAEVectorEncoder,
    IntrospectiveObjective,
    ObjectiveConfig,
    train_step,
)

B = 6  # batch
Z = 3  # latent size
C = 0.3  # the schedule weight: strictly between 0 and 1, so AS-IntroVAE's distance terms act
LR_E, LR_D = 0.5, 0.5  # SGD steps: large enough that the decoder step sees a visibly different encoder
SEED = 123
RTOL, ATOL = 1e-6, 1e-9

# beta_neg and beta_rec small enough that the expELBO terms are not exp(-large) = 0 (their gradients would vanish and
# prove nothing), gamma_r large enough that the decoder's L_rr / L_ff terms count in float64. At B = 6 and freshly
# initialised networks the posteriors of rec and fake overlap and the AS-Distance is small (sum reduction ~1e-4 for
# the MLP), so dis_scale is raised until the distance visibly moves the gradients (checked by
# `check_terms_are_active` in every test, not assumed).
COMMON = dict(beta_rec=0.5, beta_kl=0.7, beta_neg=0.4, gamma_r=0.5)
CASES = {
    "vae": dict(objective="vae", beta_rec=0.5, beta_kl=0.7),
    "introvae": dict(objective="introvae", beta_rec=0.5, beta_kl=0.7, beta_neg=0.4, margin=50.0),
    "soft": dict(objective="soft-introvae", **COMMON),
    "soft-attached-target": dict(objective="soft-introvae", detach_rec_target=False, **COMMON),
    "as-squash-sum": dict(objective="as-introvae", squash=True, encoder_reduction="sum", dis_scale=3.0, **COMMON),
    "as-nosquash-mean": dict(objective="as-introvae", squash=False, encoder_reduction="mean", dis_scale=30.0,
                             include_constant=True, **COMMON),
    "as-squash-sum-attached-target": dict(objective="as-introvae", squash=True, encoder_reduction="sum",
                                          dis_scale=3.0, detach_rec_target=False, **COMMON),
    "as-nosquash-mean-attached-target": dict(objective="as-introvae", squash=False, encoder_reduction="mean",
                                             decoder_reduction="sum", dis_scale=10.0, detach_rec_target=False,
                                             **COMMON),
}
INTROSPECTIVE = [k for k in CASES if k != "vae"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_models(family):
    """Tiny float64 networks in train mode, and a batch `x` of matching shape."""
    torch.manual_seed(0)
    if family == "mlp":
        E = AsIntroVAEVectorEncoder(in_features=4, latent_dim=Z, hidden_dims=(8, 8))
        G = AsIntroVAEVectorDecoder(out_features=4, latent_dim=Z, hidden_dims=(8, 8))
        x = torch.randn(B, 4, dtype=torch.float64)
    else:
        E = AsIntroVAEEncoder(in_channels=1, sample_size=8, latent_dim=Z, block_out_channels=(4, 8))
        G = AsIntroVAEDecoder(out_channels=1, sample_size=8, latent_dim=Z, block_out_channels=(4, 8))
        x = torch.rand(B, 1, 8, 8, dtype=torch.float64)
    return E.double().train(), G.double().train(), x


# ---- the reference, literally from docs/algorithm.md ----------------------------------------------------------


class Noise:
    """The package's draws replayed: `torch.randn` from a generator with the same seed, in the same order."""

    def __init__(self, seed=SEED):
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, shape, dtype=torch.float64):
        return torch.randn(shape, generator=self.gen, dtype=dtype)


def reparam(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


def kl(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=1)


def rec_err(a, b):
    return ((a - b) ** 2).reshape(len(a), -1).sum(dim=1)


def as_distance_naive(mu_a, lv_a, mu_b, lv_b, reduction, include_constant):
    """`AS(a, b) = R(a, a) + R(b, b) - 2 R(a, b)` with the `B x B x Z` overlap kernel, summed or averaged."""

    def R(mu_u, lv_u, mu_v, lv_v):
        var = torch.exp(lv_u)[:, None, :] + torch.exp(lv_v)[None, :, :]
        k = torch.exp(-0.5 * (mu_u[:, None, :] - mu_v[None, :, :]) ** 2 / var) / torch.sqrt(var)
        if include_constant:
            k = k / math.sqrt(2 * math.pi)
        return k.sum() if reduction == "sum" else k.mean()

    return R(mu_a, lv_a, mu_a, lv_a) + R(mu_b, lv_b, mu_b, lv_b) - 2 * R(mu_a, lv_a, mu_b, lv_b)


def _c_and_squash(cfg, c):
    """Only AS-IntroVAE uses `c` and the squash; Soft-IntroVAE is the same iteration with `c = 1`, no squash."""
    if cfg.objective == "as-introvae":
        return c, (torch.tanh if cfg.squash else (lambda t: t))
    return 1.0, (lambda t: t)


def ref_vae_loss(cfg, E, G, x, noise):
    mu, logvar = E(x)
    rec = G(reparam(mu, logvar, noise(mu.shape)))
    return cfg.beta_rec * rec_err(x, rec).mean() + cfg.beta_kl * kl(mu, logvar).mean()


def ref_encoder_loss(cfg, E, G, x, z_f, c, noise, drop=()):
    """
    `L_E` (encoder steps 1-6; IntroVAE from "The baselines") and the real batch's `z`. `drop` leaves out terms
    (`"exp_elbo"`, `"dis"`), to measure how much they weigh in the gradient.
    """
    s = 1.0 / x[0].numel()
    c, sq = _c_and_squash(cfg, c)
    fake = G(z_f).detach()  # 1. no graph needed
    mu, logvar = E(x)
    z = reparam(mu, logvar, noise(mu.shape))
    rec = G(z)
    L_rec = rec_err(x, rec).mean()  # 2.
    KL_real = kl(mu, logvar).mean()
    L_base = s * (cfg.beta_rec * L_rec + cfg.beta_kl * KL_real)
    if cfg.objective == "introvae":
        KL_rec = kl(*E(rec.detach())).mean()
        KL_fake = kl(*E(fake.detach())).mean()
        hinge = torch.clamp(cfg.margin - KL_rec, min=0) + torch.clamp(cfg.margin - KL_fake, min=0)
        return L_base + s * cfg.beta_neg * hinge / 2, z

    post, KL, R = {}, {}, {}
    for name, y in (("rec", rec.detach()), ("fake", fake.detach())):  # 3.
        mu_y, lv_y = E(y)
        y_rec = G(reparam(mu_y, lv_y, noise(mu_y.shape)))
        target = rec if (name == "rec" and not cfg.detach_rec_target) else y  # the reference-code variant
        post[name], KL[name], R[name] = (mu_y, lv_y), kl(mu_y, lv_y), rec_err(target, y_rec)
    (mu_r, lv_r), (mu_f, lv_f) = post["rec"], post["fake"]
    dis = 0.0
    if c < 1 and "dis" not in drop:  # 4.
        dis = cfg.dis_scale * as_distance_naive(sq(mu_r), sq(lv_r), sq(mu_f), sq(lv_f), cfg.encoder_reduction,
                                                cfg.include_constant)
    exponent = {n: -2 * s * (cfg.beta_rec * R[n] + cfg.beta_neg * (c * KL[n] + (1 - c) * dis)) for n in R}
    exp_elbo = {n: torch.exp(e).mean() for n, e in exponent.items()}  # 5.
    L_E = L_base + (0.0 if "exp_elbo" in drop else 0.25 * (exp_elbo["rec"] + exp_elbo["fake"]))  # 6.
    return L_E, z


def ref_decoder_loss(cfg, E, G, x, z, z_f, c, noise, drop=()):
    """`L_G` (decoder steps 1-5; IntroVAE from "The baselines"); `drop` leaves out terms (`"dis"`, `"rr"`)."""
    s = 1.0 / x[0].numel()
    c, sq = _c_and_squash(cfg, c)
    fake = G(z_f)  # 1.
    rec = G(z.detach())
    L_rec = rec_err(x, rec).mean()
    mu_r, lv_r = E(rec)  # 2.
    mu_f, lv_f = E(fake)
    if cfg.objective == "introvae":
        return s * (cfg.beta_rec * L_rec + 0.5 * cfg.beta_kl * (kl(mu_r, lv_r).mean() + kl(mu_f, lv_f).mean()))
    rec_rec = G(reparam(mu_r, lv_r, noise(mu_r.shape)).detach())
    rec_fake = G(reparam(mu_f, lv_f, noise(mu_f.shape)).detach())
    L_rr = rec_err(rec.detach(), rec_rec).mean()  # 3.
    L_ff = rec_err(fake.detach(), rec_fake).mean()
    KL_r = kl(sq(mu_r), sq(lv_r)).mean()  # 4.
    KL_f = kl(sq(mu_f), sq(lv_f)).mean()
    dis = 0.0
    if c < 1 and "dis" not in drop:
        dis = cfg.dis_scale * as_distance_naive(sq(mu_r), sq(lv_r), sq(mu_f), sq(lv_f), cfg.decoder_reduction,
                                                cfg.include_constant)
    rr = 0.0 if "rr" in drop else 0.5 * cfg.gamma_r * cfg.beta_rec * (L_rr + L_ff)
    return s * (cfg.beta_rec * L_rec + 0.5 * cfg.beta_kl * (c * (KL_r + KL_f) + (1 - c) * dis) + rr)  # 5.


# ---- helpers ----------------------------------------------------------------------------------------------------


def grads(loss, params, retain_graph=False):
    g = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]


@torch.no_grad()
def sgd_(params, gs, lr):
    for p, g in zip(params, gs):
        p.sub_(lr * g)


def names(E, G):
    return [f"encoder.{n}" for n, _ in E.named_parameters()] + [f"decoder.{n}" for n, _ in G.named_parameters()]


def assert_grads_close(actual, expected, labels, what):
    assert len(actual) == len(expected) == len(labels)
    for a, e, label in zip(actual, expected, labels):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}, {label}: {m}")
    total = torch.sqrt(sum((e**2).sum() for e in expected))
    assert total > 1e-6, f"{what}: the reference gradient is (nearly) zero ({total:.3g}); the test proves nothing"


def assert_no_graph(terms, where):
    for k, v in terms.items():
        assert not v.requires_grad and v.grad_fn is None, f"{where}: logged term {k!r} holds a graph"


def weight(g_full, g_without):
    """How far leaving a term out moves the gradient, in units of the comparison's tolerance (worst entry)."""
    return max(((a - b).abs() / (ATOL + RTOL * a.abs())).max().item() for a, b in zip(g_full, g_without))


def run_package_objectives(cfg, E, G, x, z_f):
    """`encoder_step`, gradients, an SGD step on the encoder, `decoder_step`, decoder gradients."""
    objective = IntrospectiveObjective(cfg)
    gen = torch.Generator().manual_seed(SEED)
    out = objective.encoder_step(E, G, x, z_f, C, gen)
    params_e, params_g = list(E.parameters()), list(G.parameters())
    g_e = grads(out.loss, params_e + params_g, retain_graph=True)  # the decoder step reuses the graph
    sgd_(params_e, g_e[: len(params_e)], LR_E)
    loss_d, terms_d = objective.decoder_step(E, G, x, out, C, gen)
    g_d = grads(loss_d, params_g)
    return out, g_e, loss_d, terms_d, g_d


def run_reference_objectives(cfg, E, G, x, z_f, drop=()):
    """The same sequence on the reference: L_E, gradients, the same SGD step on the encoder, L_G, gradients."""
    noise = Noise()
    L_E, z = ref_encoder_loss(cfg, E, G, x, z_f, C, noise, drop)
    params_e, params_g = list(E.parameters()), list(G.parameters())
    g_e = grads(L_E, params_e + params_g)
    sgd_(params_e, g_e[: len(params_e)], LR_E)
    L_G = ref_decoder_loss(cfg, E, G, x, z, z_f, C, noise, drop)
    return L_E, g_e, L_G, grads(L_G, params_g)


def check_terms_are_active(cfg, models, x, z_f, g_e, g_d, pkg_terms):
    """
    Preconditions: each adversarial term weighs in the gradients compared. Leaving it out of the reference must
    move the gradient by more than 1000 times the tolerance, else a wrong gradient through it could go unseen.
    """
    if cfg.objective == "introvae":  # both hinges open, so E(rec) and E(fake) carry gradient
        assert pkg_terms["kl_rec"] < cfg.margin and pkg_terms["kl_fake"] < cfg.margin
        return
    checks = [("exp_elbo", "L_E"), ("rr", "L_G")] + ([("dis", "L_E"), ("dis", "L_G")] if cfg.uses_c else [])
    for term, loss in checks:
        _, g_e_without, _, g_d_without = run_reference_objectives(cfg, *map(copy.deepcopy, models), x, z_f, (term,))
        w = weight(g_e, g_e_without) if loss == "L_E" else weight(g_d, g_d_without)
        assert w > 1e3, f"the {term!r} term moves the gradient of {loss} by only {w:.3g} tolerances"


# ---- the tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mlp", "conv"])
@pytest.mark.parametrize("case", INTROSPECTIVE)
def test_encoder_and_decoder_step_gradients_match_reference(family, case):
    """
    `encoder_step`'s `L_E` (gradient w.r.t. every parameter of both networks) and `decoder_step`'s `L_G` after an
    encoder update (gradient w.r.t. every decoder parameter) equal the reference's. Catches a missing or extra
    detach, a wrong R_rec target, squash/reduction/c/dis_scale wiring, and replay-order changes. The logged terms
    must hold no graph.
    """
    cfg = ObjectiveConfig(**CASES[case])
    E, G, x = make_models(family)
    initial = (copy.deepcopy(E), copy.deepcopy(G))  # the same module state for every reference run
    z_f = torch.randn(B, Z, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    out, g_e, loss_d, terms_d, g_d = run_package_objectives(cfg, E, G, x, z_f)
    L_E, g_e_ref, L_G, g_d_ref = run_reference_objectives(cfg, *map(copy.deepcopy, initial), x, z_f)

    check_terms_are_active(cfg, initial, x, z_f, g_e_ref, g_d_ref, out.terms)
    torch.testing.assert_close(out.loss.detach(), L_E.detach(), rtol=1e-10, atol=1e-12)
    assert_grads_close(g_e, g_e_ref, names(E, G), "grad of L_E")
    torch.testing.assert_close(loss_d.detach(), L_G.detach(), rtol=1e-10, atol=1e-12)
    assert_grads_close(g_d, g_d_ref, names(E, G)[len(list(E.parameters())):], "grad of L_G")
    assert_no_graph(out.terms, "encoder_step")
    assert_no_graph(terms_d, "decoder_step")


@pytest.mark.parametrize("family", ["mlp", "conv"])
def test_vae_loss_gradients_match_reference(family):
    """`vae_loss` (both networks at once): gradient w.r.t. every parameter; its logged terms hold no graph."""
    cfg = ObjectiveConfig(**CASES["vae"])
    E, G, x = make_models(family)
    E_ref, G_ref = copy.deepcopy(E), copy.deepcopy(G)
    loss, terms = IntrospectiveObjective(cfg).vae_loss(E, G, x, torch.Generator().manual_seed(SEED))
    ref = ref_vae_loss(cfg, E_ref, G_ref, x, Noise())
    assert_grads_close(grads(loss, [*E.parameters(), *G.parameters()]),
                       grads(ref, [*E_ref.parameters(), *G_ref.parameters()]), names(E, G), "grad of the VAE loss")
    assert_no_graph(terms, "vae_loss")


def reference_iteration(cfg, E, G, x, update_encoder=True):
    """One reference iteration with SGD, drawing its noise in `train_step`'s order (z_f first, in the data's dtype)."""
    noise = Noise()
    params_e, params_g = list(E.parameters()), list(G.parameters())
    if cfg.objective == "vae":
        g = grads(ref_vae_loss(cfg, E, G, x, noise), params_e + params_g)
        sgd_(params_e, g[: len(params_e)], LR_E)
        sgd_(params_g, g[len(params_e):], LR_D)
        return
    z_f = noise((len(x), Z), torch.float64)
    L_E, z = ref_encoder_loss(cfg, E, G, x, z_f, C, noise)
    g_e = grads(L_E, params_e)
    if update_encoder:
        sgd_(params_e, g_e, LR_E)
    L_G = ref_decoder_loss(cfg, E, G, x, z, z_f, C, noise)
    sgd_(params_g, grads(L_G, params_g), LR_D)
    if not update_encoder:
        sgd_(params_e, g_e, LR_E)


def deltas(module, before):
    return [p.detach() - b for p, b in zip(module.parameters(), before)]


@pytest.mark.parametrize("family", ["mlp", "conv"])
@pytest.mark.parametrize("case", list(CASES))
def test_train_step_updates_match_reference(family, case):
    """
    One full `train_step` with SGD: the parameter changes of both networks equal the reference iteration's (encoder
    update from L_E, then decoder update from L_G computed with the updated encoder). Catches backward into the
    wrong network, a decoder step before the encoder update, a wrong noise order, and graph-holding logged terms.
    """
    cfg = ObjectiveConfig(**CASES[case])
    E, G, x = make_models(family)
    E_ref, G_ref = copy.deepcopy(E), copy.deepcopy(G)
    E_old, G_old = copy.deepcopy(E), copy.deepcopy(G)
    before_e = [p.detach().clone() for p in E.parameters()]
    before_g = [p.detach().clone() for p in G.parameters()]

    terms = train_step(IntrospectiveObjective(cfg), E, G, torch.optim.SGD(E.parameters(), lr=LR_E),
                       torch.optim.SGD(G.parameters(), lr=LR_D), x, Z, c=C, vae_step=cfg.objective == "vae",
                       generator=torch.Generator().manual_seed(SEED))
    reference_iteration(cfg, E_ref, G_ref, x)

    labels = names(E, G)
    assert_grads_close(deltas(E, before_e) + deltas(G, before_g), deltas(E_ref, before_e) + deltas(G_ref, before_g),
                       labels, "parameter change")
    for what, d in (("encoder", deltas(E, before_e)), ("decoder", deltas(G, before_g))):
        assert sum(t.abs().sum() for t in d) > 1e-6, f"the {what} did not move"
    assert_no_graph(terms, "train_step")

    if cfg.objective != "vae":
        # The decoder step must see the updated encoder: with the old one the decoder would move differently.
        reference_iteration(cfg, E_old, G_old, x, update_encoder=False)
        stale = deltas(G_old, before_g)
        assert weight(deltas(G, before_g), stale) > 1e3, "the encoder update does not change the decoder step"


# ---- the contracts of the `.detach()` calls between the two steps ----------------------------------------------


class _Saved:
    """
    What the pack hook stores for a tensor the autograd graph saves; weakly referenced to count the live ones. It
    holds the tensor detached: a saved output holding its own `grad_fn` would make a cycle through C++ that the
    garbage collector cannot break (no backward runs in the test that uses it).
    """

    def __init__(self, tensor):
        self.tensor = tensor.detach()


@pytest.mark.parametrize("family", ["mlp", "conv"])
@pytest.mark.parametrize("case", ["introvae", "soft", "as-squash-sum"])
def test_without_graph_releases_the_encoder_steps_graph(family, case):
    """
    `EncoderStepOutput.without_graph` keeps no graph alive between the steps (the micro-batch path of
    `train_step`): once the full output is dropped, none of the tensors the encoder step's graph saved for backward
    is alive, even when no backward ran to free them. Fails if `loss` or `z` is returned without `.detach()`: each
    holds the `grad_fn` chain, and with it every saved activation of `E(x)` (and of `G(z)`, `E(rec)`, ... for `loss`).
    """
    import gc
    import weakref

    cfg = ObjectiveConfig(**CASES[case])
    E, G, x = make_models(family)
    z_f = torch.randn(B, Z, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    live = weakref.WeakSet()

    def pack(tensor):
        saved = _Saved(tensor)
        live.add(saved)
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.tensor):
        out = IntrospectiveObjective(cfg).encoder_step(E, G, x, z_f, C, torch.Generator().manual_seed(SEED))
    z = out.z.detach().clone()
    gc.collect()
    assert len(live) > 10, f"precondition: the encoder step's graph saves tensors ({len(live)} found)"
    kept = out.without_graph()
    del out
    gc.collect()
    assert len(live) == 0, f"without_graph() keeps {len(live)} saved tensors of the encoder step's graph alive"
    for name in ("loss", "z"):
        value = getattr(kept, name)
        assert not value.requires_grad and value.grad_fn is None, f"without_graph().{name} holds a graph"
    torch.testing.assert_close(kept.z, z, rtol=0, atol=0)
    assert kept.rec is None and kept.fake is None and kept.loss_rec is None


@pytest.mark.parametrize("family", ["mlp", "conv"])
@pytest.mark.parametrize("case", ["introvae", "soft", "as-nosquash-mean"])
def test_decoder_step_recomputes_rec_from_the_detached_z(family, case):
    """
    Given an encoder output with no `rec` to reuse but a `z` still attached to the encoder (a caller's own
    `EncoderStepOutput`), `decoder_step` computes the spec's `L_G` with `rec = G(z.detach())`: its gradient with
    respect to *every* parameter equals the reference's, so the encoder's parameters reach `L_G` only through
    `E(rec)` and `E(fake)`, never through `z`. Fails if the decoder step decodes `encoder_output.z` undetached.
    """
    import dataclasses

    cfg = ObjectiveConfig(**CASES[case])
    E, G, x = make_models(family)
    E_ref, G_ref = copy.deepcopy(E), copy.deepcopy(G)
    z_f = torch.randn(B, Z, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    objective = IntrospectiveObjective(cfg)
    gen = torch.Generator().manual_seed(SEED)
    out = objective.encoder_step(E, G, x, z_f, C, gen)
    assert out.z.requires_grad  # precondition: this z does reach the encoder
    attached = dataclasses.replace(out, rec=None, fake=None, loss_rec=None)
    loss_d, _ = objective.decoder_step(E, G, x, attached, C, gen)
    params = [*E.parameters(), *G.parameters()]

    noise = Noise()
    _, z_ref = ref_encoder_loss(cfg, E_ref, G_ref, x, z_f, C, noise)
    L_G = ref_decoder_loss(cfg, E_ref, G_ref, x, z_ref, z_f, C, noise)
    params_ref = [*E_ref.parameters(), *G_ref.parameters()]

    torch.testing.assert_close(loss_d.detach(), L_G.detach(), rtol=1e-10, atol=1e-12)
    n_e = len(list(E.parameters()))
    g, g_ref = grads(loss_d, params), grads(L_G, params_ref)
    assert_grads_close(g[:n_e], g_ref[:n_e], names(E, G)[:n_e], "grad of L_G w.r.t. the encoder")
    assert_grads_close(g[n_e:], g_ref[n_e:], names(E, G)[n_e:], "grad of L_G w.r.t. the decoder")
