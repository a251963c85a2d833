"""`train_step`: gradient accumulation is exactly a bigger batch for the objectives whose losses are batch means."""

import copy

import pytest
import torch

from asintrovae_hf import (AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder, IntrospectiveObjective, ObjectiveConfig,
                          train_step)


def models():
    torch.manual_seed(0)
    return (AsIntroVAEVectorEncoder(in_features=3, latent_dim=2, hidden_dims=(16,)).double(),
            AsIntroVAEVectorDecoder(out_features=3, latent_dim=2, hidden_dims=(16,)).double())


def step(objective, encoder, decoder, x, generators, vae_step=False):
    opt_e = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    return train_step(objective, encoder, decoder, opt_e, opt_d, x, 2, c=0.4, vae_step=vae_step, generator=generators)


@pytest.mark.parametrize("name", ["vae", "soft-introvae"])
def test_accumulation_equals_the_big_batch(name):
    """Three micro-batches (2 + 3 + 3 samples) against one batch of 8, each sample with its own generator: the updated
    weights and the logged terms agree to float64 rounding. Catches a missing 1/k, an encoder updated per micro-batch,
    or the decoder step run before the last micro-batch reached the encoder."""
    objective = IntrospectiveObjective(objective=name, beta_rec=0.5, beta_kl=0.3, beta_neg=0.9)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(8)]  # noqa: E731
    e1, d1 = models()
    e2, d2 = copy.deepcopy(e1), copy.deepcopy(d1)
    big = step(objective, e1, d1, x, gens(), vae_step=name == "vae")
    micro = step(objective, e2, d2, [x[:2], x[2:5], x[5:]], gens(), vae_step=name == "vae")
    for a, b in zip(list(e1.parameters()) + list(d1.parameters()), list(e2.parameters()) + list(d2.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for k in ("loss_rec", "kl_real") + (("exp_elbo_rec", "exp_elbo_fake", "kl_fake_decoder") if name != "vae" else ()):
        torch.testing.assert_close(micro[k], big[k], rtol=1e-10, atol=1e-12)
    e0, _ = models()
    assert any(not torch.equal(a, b) for a, b in zip(e0.parameters(), e1.parameters()))  # the step did move


def test_accumulation_in_the_introspective_step_is_not_a_mean_for_introvae():
    """IntroVAE's hinge acts on batch means: accumulation changes the update (documented, not hidden)."""
    objective = IntrospectiveObjective(objective="introvae", beta_rec=0.5, beta_kl=0.3, beta_neg=0.9, margin=50.0)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(8)]  # noqa: E731
    e1, d1 = models()
    e2, d2 = copy.deepcopy(e1), copy.deepcopy(d1)
    step(objective, e1, d1, x, gens())
    step(objective, e2, d2, [x[:2], x[2:]], gens())
    assert all(torch.isfinite(p).all() for p in e2.parameters())


def test_micro_batch_generators_must_match_the_micro_batches():
    objective = IntrospectiveObjective(objective="soft-introvae")
    e, d = models()
    x = torch.randn(4, 3, dtype=torch.float64)
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    with pytest.raises(ValueError, match="one of micro_batch_generators per micro-batch"):
        train_step(objective, e, d, opt(e), opt(d), [x[:2], x[2:]], 2, micro_batch_generators=[torch.Generator()])
    with pytest.raises(ValueError, match="3 generators for 4 samples"):
        train_step(objective, e, d, opt(e), opt(d), x, 2, generator=[torch.Generator()] * 3)


@pytest.mark.parametrize("objective", ["introvae", "soft-introvae", "as-introvae"])
def test_measured_gradient_parts_are_the_encoder_gradient_split_in_two(objective):
    """`measure_gradients=True` returns the norms of the encoder's gradient from the adversarial and the VAE parts
    of `L_E`; the two parts add up to the gradient the update uses, and the weights move exactly as without."""
    from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder

    def run(measure):
        torch.manual_seed(0)
        kw = dict(sample_size=8, latent_dim=4, block_out_channels=(8,))
        encoder = AsIntroVAEEncoder(in_channels=1, **kw).double()
        decoder = AsIntroVAEDecoder(out_channels=1, **kw).double()
        opt_e, opt_d = torch.optim.SGD(encoder.parameters(), lr=0.1), torch.optim.SGD(decoder.parameters(), lr=0.1)
        objective_ = IntrospectiveObjective(ObjectiveConfig(objective=objective, beta_neg=8.0, margin=50.0))
        x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        before = [p.detach().clone() for p in encoder.parameters()]
        terms = train_step(objective_, encoder, decoder, opt_e, opt_d, x, 4, c=0.5,
                           generator=torch.Generator().manual_seed(2), measure_gradients=measure)
        step = torch.cat([(b - p.detach()).flatten() / 0.1 for b, p in zip(before, encoder.parameters())])
        return terms, step

    measured, gradient = run(True)
    plain, same_gradient = run(False)
    assert "grad_norm_adversarial" not in plain
    torch.testing.assert_close(gradient, same_gradient, rtol=0, atol=0)
    adversarial, vae = float(measured["grad_norm_adversarial"]), float(measured["grad_norm_vae"])
    assert adversarial > 0 and vae > 0
    # |g_adv + g_vae| = |g|: the two parts are the whole gradient (triangle inequality, and not equal to either)
    total = float(gradient.norm())
    assert abs(adversarial - vae) - 1e-9 <= total <= adversarial + vae + 1e-9
    assert total != pytest.approx(vae, rel=1e-6) and total != pytest.approx(adversarial, rel=1e-6)


@pytest.mark.usefixtures("torch_compile_environment")
@pytest.mark.parametrize("vae_step", [True, False])
def test_compiled_networks_train_with_retained_graphs_and_the_switch_is_restored(vae_step):
    """AOTAutograd's donated buffers refuse the retained encoder graph the decoder step reuses (torch 2.14):
    `train_step` compiles and runs compiled networks with them off, restores torch's switch, and steps as eager."""
    functorch_config = pytest.importorskip("torch._functorch.config")
    if not hasattr(functorch_config, "donated_buffer"):
        pytest.skip("this torch has no donated buffers")
    from torch._dynamo.backends.registry import lookup_backend

    switch_at_compile = []

    def recording_aot_eager(graph_module, example_inputs):  # AOTAutograd without a C++ compiler
        switch_at_compile.append(functorch_config.donated_buffer)
        return lookup_backend("aot_eager")(graph_module, example_inputs)

    objective = IntrospectiveObjective(ObjectiveConfig(objective="as-introvae", beta_neg=8.0))
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(compiled):
        encoder, decoder = models()
        if compiled:
            torch._dynamo.reset()
            encoder = torch.compile(encoder, backend=recording_aot_eager)
            decoder = torch.compile(decoder, backend=recording_aot_eager)
        opt_e = torch.optim.SGD(encoder.parameters(), lr=0.1)
        opt_d = torch.optim.SGD(decoder.parameters(), lr=0.1)
        terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, 2, c=0.5, vae_step=vae_step,
                           generator=torch.Generator().manual_seed(2), measure_gradients=not vae_step)
        return terms, [p.detach().clone() for p in list(encoder.parameters()) + list(decoder.parameters())]

    before = functorch_config.donated_buffer
    try:
        compiled_terms, compiled_weights = run(True)
    finally:
        torch._dynamo.reset()
    assert switch_at_compile and not any(switch_at_compile)
    assert functorch_config.donated_buffer == before
    eager_terms, eager_weights = run(False)
    assert set(compiled_terms) == set(eager_terms)
    for a, b in zip(compiled_weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
