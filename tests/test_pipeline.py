"""AsIntroVAEPipeline: sampling, reconstruction, encode/decode, interpolation, save/load, input formats."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from asintrovae_hf import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEPipeline,
    AsIntroVAEVectorDecoder,
    AsIntroVAEVectorEncoder,
)


def make_pipeline(channels=1, size=16, latent_dim=4):
    torch.manual_seed(0)
    kw = dict(sample_size=size, latent_dim=latent_dim, block_out_channels=(8, 16))
    return AsIntroVAEPipeline(
        encoder=AsIntroVAEEncoder(in_channels=channels, **kw).eval(),
        decoder=AsIntroVAEDecoder(out_channels=channels, **kw).eval(),
    )


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_sampling_output_types(channels, mode):
    pipe = make_pipeline(channels)
    out = pipe(batch_size=3, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, ImagePipelineOutput) and len(out.images) == 3
    assert out.images[0].size == (16, 16) and out.images[0].mode == mode
    arr = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert arr.shape == (3, 16, 16, channels) and arr.min() >= 0 and arr.max() <= 1
    pt = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert pt.shape == (3, channels, 16, 16)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    # the PIL image is the np output quantised
    np.testing.assert_array_equal(np.asarray(out.images[0]).reshape(16, 16, channels), (arr[0] * 255).round().astype(np.uint8))
    (images,) = pipe(batch_size=2, return_dict=False, output_type="np")
    assert images.shape[0] == 2


def test_generator_determinism_and_latents():
    pipe = make_pipeline()
    a = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), output_type="pt").images
    b = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), output_type="pt").images
    c = pipe(batch_size=2, generator=torch.Generator().manual_seed(6), output_type="pt").images
    assert torch.equal(a, b) and not torch.equal(a, c)
    latents = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(pipe(latents=latents, output_type="pt").images, a)
    torch.testing.assert_close(pipe.decode(latents, output_type="pt").images, a)


def test_save_load_round_trip_gives_same_images(tmp_path):
    pipe = make_pipeline(channels=3)
    pipe.save_pretrained(tmp_path)
    for path in ["model_index.json", "encoder/config.json", "encoder/diffusion_pytorch_model.safetensors",
                 "decoder/config.json", "decoder/diffusion_pytorch_model.safetensors"]:
        assert (tmp_path / path).exists(), path
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path)
    a = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="np").images
    b = loaded(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(a, b)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(1)).images
    np.testing.assert_array_equal(pipe.reconstruct(images, output_type="np").images,
                                  loaded.reconstruct(images, output_type="np").images)


def test_reconstruct_accepts_pil_numpy_and_tensors():
    pipe = make_pipeline()
    rng = np.random.default_rng(0)
    pixels = rng.random((2, 16, 16, 1)).astype(np.float32)
    from_np = pipe.reconstruct(pixels, output_type="pt").images
    from_pt = pipe.reconstruct(torch.from_numpy(pixels).permute(0, 3, 1, 2), output_type="pt").images
    pil = [PIL.Image.fromarray((p[..., 0] * 255).round().astype(np.uint8), "L") for p in pixels]
    from_pil = pipe.reconstruct(pil, output_type="pt").images
    torch.testing.assert_close(from_np, from_pt)
    torch.testing.assert_close(from_pil, from_np, atol=2e-2, rtol=0)
    # an RGB PIL image of another size is converted and resized for a 1-channel 16x16 model
    big = PIL.Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), "RGB")
    assert pipe.reconstruct(big, output_type="pt").images.shape == (1, 1, 16, 16)


def test_encode_returns_posterior_and_reconstruct_uses_its_mean():
    pipe = make_pipeline()
    x = torch.rand(2, 1, 16, 16)
    posterior = pipe.encode(x).latent_dist
    assert posterior.mean.shape == (2, 4)
    torch.testing.assert_close(pipe.reconstruct(x, output_type="pt").images,
                               pipe.decode(posterior.mode(), output_type="pt").images)
    sampled = pipe.reconstruct(x, generator=torch.Generator().manual_seed(0), sample_posterior=True, output_type="pt")
    assert not torch.equal(sampled.images, pipe.reconstruct(x, output_type="pt").images)


def test_interpolate_endpoints_are_the_reconstructions():
    pipe = make_pipeline()
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    path = pipe.interpolate(a, b, num_steps=5, output_type="pt").images
    assert path.shape == (5, 1, 16, 16)
    torch.testing.assert_close(path[0], pipe.reconstruct(a, output_type="pt").images[0])
    torch.testing.assert_close(path[-1], pipe.reconstruct(b, output_type="pt").images[0])
    assert len(pipe.interpolate(a, b, num_steps=3).images) == 3
    with pytest.raises(ValueError, match="num_steps must be at least 2"):
        pipe.interpolate(a, b, num_steps=1)


def test_bad_inputs():
    pipe = make_pipeline()
    with pytest.raises(ValueError, match=r"output_type must be one of \('pil', 'np', 'pt'\), got 'latent'"):
        pipe(output_type="latent")
    with pytest.raises(ValueError, match=r"latents must have shape \(batch, 4\), got \(2, 3\)"):
        pipe(latents=torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 16, 16\).*got a tensor of shape \(1, 3, 16, 16\)"):
        pipe.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="latent_dim differ"):
        AsIntroVAEPipeline(
            encoder=AsIntroVAEEncoder(in_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16)),
            decoder=AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=5, block_out_channels=(8, 16)),
        )


def test_vector_pipeline_round_trip(tmp_path):
    torch.manual_seed(0)
    pipe = AsIntroVAEPipeline(
        encoder=AsIntroVAEVectorEncoder(in_features=2, latent_dim=2, hidden_dims=(8,)),
        decoder=AsIntroVAEVectorDecoder(out_features=2, latent_dim=2, hidden_dims=(8,)),
    )
    points = pipe(batch_size=5, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert points.shape == (5, 2)
    with pytest.raises(ValueError, match="needs an image model"):
        pipe(batch_size=2)
    pipe.save_pretrained(tmp_path)
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path)
    np.testing.assert_array_equal(points, loaded(batch_size=5, generator=torch.Generator().manual_seed(0), output_type="np").images)
    assert pipe.reconstruct(points, output_type="pt").images.shape == (5, 2)
