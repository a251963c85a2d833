"""Encoder/decoder models: every supported size, the diffusers output API, save/load, bad-input errors."""

import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from asintrovae_hf.models.loading import check_sample_size

# (sample_size, block_out_channels): the reference configurations (channels shrunk where only the layout matters)
SIZES = [
    (16, (8, 16)),
    (28, (64, 128)),  # MNIST exactly as the reference
    (32, (8, 16, 32)),
    (64, (4, 8, 8, 16)),
    (128, (4, 8, 8, 16, 16)),
    (256, (2, 4, 4, 8, 8, 8)),
]


@pytest.mark.parametrize("size, channels", SIZES)
def test_every_supported_size_round_trips_shapes(size, channels):
    torch.manual_seed(0)
    encoder = AsIntroVAEEncoder(in_channels=3, sample_size=size, latent_dim=6, block_out_channels=channels).eval()
    decoder = AsIntroVAEDecoder(out_channels=3, sample_size=size, latent_dim=6, block_out_channels=channels).eval()
    x = torch.rand(2, 3, size, size)
    posterior = encoder.encode(x).latent_dist
    assert isinstance(posterior, DiagonalGaussianDistribution)
    assert posterior.mean.shape == posterior.logvar.shape == (2, 6)
    out = decoder.decode(posterior.mode())
    assert isinstance(out, DecoderOutput) and out.sample.shape == (2, 3, size, size)
    assert decoder.decode(posterior.mode(), return_dict=False)[0].shape == (2, 3, size, size)


def test_encode_tuple_forward_and_sample_with_generator():
    encoder = AsIntroVAEEncoder(in_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16)).eval()
    x = torch.rand(3, 1, 16, 16)
    (posterior,) = encoder.encode(x, return_dict=False)
    mu, logvar = encoder(x)
    torch.testing.assert_close(posterior.mode(), mu)
    torch.testing.assert_close(posterior.logvar, logvar)
    a = posterior.sample(generator=torch.Generator().manual_seed(1))
    b = posterior.sample(generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mode())


def test_vector_models_api():
    encoder = AsIntroVAEVectorEncoder(in_features=5, latent_dim=3, hidden_dims=(16, 16))
    decoder = AsIntroVAEVectorDecoder(out_features=5, latent_dim=3, hidden_dims=(16, 16))
    posterior = encoder.encode(torch.randn(7, 5)).latent_dist
    assert posterior.mean.shape == (7, 3)
    assert decoder.decode(posterior.sample()).sample.shape == (7, 5)


def public_config(model):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items() if not k.startswith("_")}


@pytest.mark.parametrize(
    "make",
    [
        lambda: (AsIntroVAEEncoder(in_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16)),
                 AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16),
                                   output_activation="sigmoid"), (2, 1, 16, 16)),
        lambda: (AsIntroVAEVectorEncoder(in_features=2, latent_dim=2, hidden_dims=(8,)),
                 AsIntroVAEVectorDecoder(out_features=2, latent_dim=2, hidden_dims=(8,)), (2, 2)),
    ],
)
def test_save_load_round_trip(tmp_path, make):
    encoder, decoder, shape = make()
    encoder.eval(), decoder.eval()
    encoder.save_pretrained(tmp_path / "enc")
    decoder.save_pretrained(tmp_path / "dec")
    assert (tmp_path / "enc" / "config.json").exists()
    assert (tmp_path / "enc" / "diffusion_pytorch_model.safetensors").exists()
    enc2 = type(encoder).from_pretrained(tmp_path / "enc")
    dec2 = type(decoder).from_pretrained(tmp_path / "dec")
    assert public_config(enc2) == public_config(encoder) and public_config(dec2) == public_config(decoder)
    x = torch.rand(shape)
    torch.testing.assert_close(enc2.encode(x).latent_dist.mean, encoder.encode(x).latent_dist.mean, rtol=0, atol=0)
    z = torch.randn(2, encoder.config.latent_dim)
    torch.testing.assert_close(dec2.decode(z).sample, decoder.decode(z).sample, rtol=0, atol=0)


def test_wrong_image_shape_names_expected_and_given():
    encoder = AsIntroVAEEncoder(in_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 16, 16\).*got a tensor of shape \(2, 3, 16, 16\)"):
        encoder.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 16, 16\).*got a tensor of shape \(2, 1, 32, 32\)"):
        encoder.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got a tensor of shape \(1, 16, 16\)"):
        encoder.encode(torch.rand(1, 16, 16))


def test_wrong_latent_shape_names_expected_and_given():
    decoder = AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    with pytest.raises(ValueError, match=r"latents of shape \(batch, 4\), got a tensor of shape \(2, 5\)"):
        decoder.decode(torch.randn(2, 5))
    vec = AsIntroVAEVectorEncoder(in_features=2, latent_dim=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"vectors of shape \(batch, 2\), got a tensor of shape \(4, 3\)"):
        vec.encode(torch.randn(4, 3))


def test_unsupported_size_lists_valid_sizes():
    with pytest.raises(ValueError, match=r"sample_size=30 .*multiple of 4 \(for example 4, 8, 12, 16"):
        AsIntroVAEEncoder(sample_size=30, block_out_channels=(8, 16))
    with pytest.raises(ValueError, match=r"multiple of 8"):
        check_sample_size(28, (64, 128, 256))
    with pytest.raises(ValueError, match="output_activation must be one of"):
        AsIntroVAEDecoder(sample_size=16, block_out_channels=(8, 16), output_activation="relu")
