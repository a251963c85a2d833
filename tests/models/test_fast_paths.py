"""The fast paths give the straightforward path's losses and gradients, to float tolerance.

Fast: the decoder's upsampling fused into its up blocks' residual blocks (`fuse_upsample`, a transposed convolution),
and the channels-last memory format (the training script's default on the CPU). Straightforward: each up block
upsampling then convolving, contiguous tensors. Compared on whole iterations of `train_step` with an SGD that records
the gradients it applies: the losses of both steps, the gradients of both networks (the decoder's computed after the
encoder's update) and the BatchNorm running statistics. The learning rate is small so that float32 rounding is not
amplified by the update.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, IntrospectiveObjective, train_step
from asintrovae_hf.models.blocks import ResidualBlock, upsample_conv3x3

CONFIGS = {"mnist28": dict(sample_size=28, block_out_channels=(64, 128)),
           "small16": dict(sample_size=16, block_out_channels=(8, 16, 16))}


def networks(config, dtype, channels=1, latent_dim=8):
    torch.manual_seed(0)
    kw = dict(latent_dim=latent_dim, **CONFIGS[config])
    return (AsIntroVAEEncoder(in_channels=channels, **kw).to(dtype),
            AsIntroVAEDecoder(out_channels=channels, **kw).to(dtype))


class RecordingSGD(torch.optim.SGD):
    def step(self, closure=None):
        self.grads = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
        return super().step(closure)


def one_iteration(encoder, decoder, x, objective, c, fast):
    encoder, decoder = copy.deepcopy(encoder), copy.deepcopy(decoder)
    decoder.fuse_upsample = fast
    if fast:
        encoder.to(memory_format=torch.channels_last)
        decoder.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt_e, opt_d = RecordingSGD(encoder.parameters(), lr=1e-3), RecordingSGD(decoder.parameters(), lr=1e-3)
    terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, decoder.config.latent_dim, c=c,
                       generator=torch.Generator().manual_seed(1))
    grads = {f"{k}.{n}": g for k, m, opt in (("E", encoder, opt_e), ("G", decoder, opt_d))
             for (n, _), g in zip(m.named_parameters(), opt.grads)}
    buffers = {f"{k}.{n}": b.clone() for k, m in (("E", encoder), ("G", decoder)) for n, b in m.named_buffers()}
    return terms, grads, buffers


OBJECTIVE_CASES = [("as-introvae", 0.5, True, 1e-8), ("as-introvae", 0.5, False, 1e-8), ("as-introvae", 0.5, True, 1.0),
                   ("soft-introvae", 1.0, True, 1e-8), ("introvae", 1.0, True, 1e-8)]


def compare(config, case, dtype, gradients=True):
    objective_name, c, detach, gamma_r = case
    encoder, decoder = networks(config, dtype)
    size = CONFIGS[config]["sample_size"]
    x = torch.rand(6, 1, size, size, generator=torch.Generator().manual_seed(2)).to(dtype)
    objective = IntrospectiveObjective(objective=objective_name, beta_neg=8.0, detach_rec_target=detach,
                                       gamma_r=gamma_r)
    slow = one_iteration(encoder, decoder, x, objective, c, fast=False)
    fast = one_iteration(encoder, decoder, x, objective, c, fast=True)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for got, want in zip(fast, slow) if gradients else [(fast[0], slow[0])]:
        assert got.keys() == want.keys()
        for k in want:  # each tensor relative to its largest entry
            scale = want[k].abs().max().clamp_min(1e-30)
            torch.testing.assert_close(got[k] / scale, want[k] / scale, msg=lambda m, k=k: f"{k}: {m}", **tol)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=lambda case: "-".join(map(str, case)))
def test_fast_iteration_equals_the_straightforward_one_float64(config, case):
    """Losses, gradients and BatchNorm statistics agree to 1e-9 (`gamma_r = 1`: the decoder step's
    reconstructions of reconstructions weigh as much as the rest, so they are checked as well)."""
    compare(config, case, torch.float64)


@pytest.mark.parametrize("case", OBJECTIVE_CASES, ids=lambda case: "-".join(map(str, case)))
def test_fast_iteration_equals_the_straightforward_one_float32(case):
    """In float32: losses everywhere, gradients at the small configuration. (At 28x28, two evaluation orders of the
    straightforward path itself, NCHW and channels-last, already differ by up to 1e-2 of a gradient's largest entry:
    rounding flips a few LeakyReLU inputs across 0. There the float64 test is the exact one.)"""
    compare("small16", case, torch.float32)
    compare("mnist28", case, torch.float32, gradients=False)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv3x3_is_upsample_then_conv(channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    got = upsample_conv3x3(xs, w)
    want = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(got, (x, w), g), torch.autograd.grad(want, (x, w), g))


@pytest.mark.parametrize("in_channels,out_channels", [(4, 4), (4, 6)])
def test_residual_block_upsample_flag(in_channels, out_channels):
    torch.manual_seed(0)
    block = ResidualBlock(in_channels, out_channels).double()
    x = torch.randn(5, in_channels, 3, 3, dtype=torch.float64)
    fused = block(x, upsample=True)
    plain = block(F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(fused, plain)


def test_fused_only_in_training_mode_and_state_dict_unchanged():
    """Training-mode outputs match the layer-by-layer ones; eval mode (sampling) runs layer by layer, bit for bit;
    no new weight or buffer."""
    _, decoder = networks("small16", torch.float64)
    z = torch.randn(4, 8, dtype=torch.float64)
    fused = decoder(z)
    decoder.fuse_upsample = False
    torch.testing.assert_close(fused, decoder(z))
    decoder.eval()
    plain = decoder(z)
    decoder.fuse_upsample = True
    assert torch.equal(decoder(z), plain)
    assert not any("upsample" in k for k in decoder.state_dict())


def test_fused_upsampling_with_a_class_embedding_matches_the_plain_path():
    """The class embedding enters after the first conv whether or not that conv also upsamples."""
    from asintrovae_hf import AsIntroVAEDecoder

    torch.manual_seed(0)
    decoder = AsIntroVAEDecoder(out_channels=1, sample_size=8, latent_dim=4, block_out_channels=(8, 16),
                                num_class_embeds=3).double().train()
    z, labels = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    fused = decoder(z, labels)
    decoder.fuse_upsample = False
    plain = decoder(z, labels)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
