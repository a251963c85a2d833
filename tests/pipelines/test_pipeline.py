"""AsIntroVAEPipeline: sampling, reconstruction, encode/decode, interpolation, save/load, input formats."""

from pathlib import Path

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
from helpers import NO_PLUGIN, tiny_image_pipeline


def make_pipeline(channels=1, size=16, latent_dim=4):
    return tiny_image_pipeline(channels, size, latent_dim)


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
    with pytest.raises(ValueError, match=r"output_type must be one of \('pil', 'np', 'pt', 'latent'\), got 'jpg'"):
        pipe(output_type="jpg")
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


# ---- a pipeline is a pure function of its inputs -----------------------------------------------------------------


def training_mode_pipeline():
    """Models as `train()` returns them: training mode, BatchNorm statistics not yet settled."""
    torch.manual_seed(0)
    kw = dict(sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    encoder, decoder = AsIntroVAEEncoder(in_channels=1, **kw), AsIntroVAEDecoder(out_channels=1, **kw)
    with torch.no_grad():  # move the running statistics away from their initial values
        decoder(torch.randn(8, 4) * 3)
        encoder(torch.rand(8, 1, 16, 16))
    return AsIntroVAEPipeline(encoder=encoder, decoder=decoder)


def state_of(pipe):
    return {f"{name}.{k}": v.clone() for name in ("encoder", "decoder")
            for k, v in getattr(pipe, name).state_dict().items()}


def test_each_sample_is_independent_of_the_rest_of_the_batch():
    """Would catch BatchNorm running on batch statistics (models left in training mode)."""
    pipe = training_mode_pipeline()
    gens = lambda n: [torch.Generator().manual_seed(100 + i) for i in range(n)]  # noqa: E731
    one = pipe(batch_size=1, generator=gens(1), output_type="pt").images
    five = pipe(batch_size=5, generator=gens(5), output_type="pt").images
    torch.testing.assert_close(five[:1], one, rtol=0, atol=1e-6)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pipe.reconstruct(x, output_type="pt").images[:1],
                               pipe.reconstruct(x[:1], output_type="pt").images, rtol=0, atol=1e-6)
    torch.testing.assert_close(pipe.encode(x).latent_dist.mean[:2], pipe.encode(x[:2]).latent_dist.mean,
                               rtol=0, atol=1e-6)


def test_calls_change_no_weight_buffer_or_mode():
    pipe = training_mode_pipeline()
    before = state_of(pipe)
    x = torch.rand(4, 1, 16, 16)
    pipe(batch_size=4, output_type="pt")
    pipe.reconstruct(x, output_type="pt")
    pipe.reconstruct(x, sample_posterior=True, generator=torch.Generator().manual_seed(0), output_type="pt")
    pipe.encode(x)
    pipe.decode(torch.randn(3, 4), output_type="pt")
    pipe.interpolate(x[:1], x[1:2], num_steps=3, output_type="pt")
    after = state_of(pipe)
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert pipe.encoder.training and pipe.decoder.training  # the caller's mode is restored
    eval_pipe = make_pipeline()
    eval_pipe(batch_size=2, output_type="pt")
    assert not eval_pipe.encoder.training and not eval_pipe.decoder.training


def test_mode_is_restored_when_a_call_fails():
    pipe = training_mode_pipeline()
    with pytest.raises(ValueError):
        pipe(latents=torch.full((2, 4), float("nan")))
    with pytest.raises(ValueError):
        pipe.reconstruct(torch.rand(2, 3, 16, 16))
    assert pipe.encoder.training and pipe.decoder.training


def test_bad_input_messages():
    pipe = make_pipeline()
    nan_image = torch.rand(1, 1, 16, 16)
    nan_image[0, 0, 3, 3] = float("nan")
    cases = [
        (lambda: pipe.reconstruct(nan_image), ValueError, "NaN or infinity"),
        (lambda: pipe(batch_size=0), ValueError, r"batch_size must be a positive integer, got 0"),
        (lambda: pipe(batch_size=-1), ValueError, r"batch_size must be a positive integer, got -1"),
        (lambda: pipe(batch_size=2.5), ValueError, r"batch_size must be a positive integer, got 2.5"),
        (lambda: pipe(batch_size=2, generator=[torch.Generator()]), ValueError, "1 generators for batch_size 2"),
        (lambda: pipe.reconstruct(torch.rand(1, 1, 16, 16) * 3), ValueError, r"must lie in \[0, 1\].*from 0.* to 2.9"),
        (lambda: pipe.reconstruct(-torch.rand(1, 1, 16, 16)), ValueError, r"must lie in \[0, 1\]"),
        (lambda: pipe.reconstruct(torch.zeros(0, 1, 16, 16)), ValueError, "empty"),
        (lambda: pipe.reconstruct([]), ValueError, "empty list"),
        (lambda: pipe.reconstruct("digit.png"), TypeError, "expected PIL images, NumPy arrays or torch tensors; got str"),
        (lambda: pipe.interpolate(torch.rand(2, 1, 16, 16), torch.rand(1, 1, 16, 16)), ValueError,
         "one image per endpoint; image_a is a batch of 2"),
        (lambda: pipe.interpolate(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), num_steps=2.0), ValueError,
         "num_steps must be at least 2"),
        (lambda: pipe.decode(torch.randn(2, 4), output_type="latent"), ValueError, "output_type must be one of"),
        (lambda: pipe.decode(torch.full((1, 4), float("inf"))), ValueError, "latents contain NaN or infinity"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_uint8_inputs_are_read_as_0_to_255():
    pipe = make_pipeline()
    pixels = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = pipe.reconstruct(pixels.float() / 255, output_type="pt").images
    torch.testing.assert_close(pipe.reconstruct(pixels, output_type="pt").images, expected)
    as_array = pixels.permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(pipe.reconstruct(as_array, output_type="pt").images, expected)


def test_latent_output_type():
    pipe = make_pipeline()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    latents = pipe(batch_size=3, generator=gen(), output_type="latent").images
    assert latents.shape == (3, 4)
    torch.testing.assert_close(latents, torch.randn(3, 4, generator=gen()))
    torch.testing.assert_close(pipe.decode(latents, output_type="pt").images,
                               pipe(batch_size=3, generator=gen(), output_type="pt").images)
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(pipe.reconstruct(x, output_type="latent").images, pipe.encode(x).latent_dist.mode())
    assert pipe.interpolate(x[:1], x[1:], num_steps=4, output_type="latent").images.shape == (4, 4)


def test_from_pipe_shares_the_components():
    pipe = make_pipeline()
    other = AsIntroVAEPipeline.from_pipe(pipe)
    assert other.encoder is pipe.encoder and other.decoder is pipe.decoder
    torch.testing.assert_close(other(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images,
                               pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images)


@pytest.mark.usefixtures("torch_compile_environment")  # torch 2.6 sets TORCHINDUCTOR_CACHE_DIR for any backend
def test_torch_compile_of_a_component_is_the_module_that_runs():
    """`pipe.decoder = torch.compile(pipe.decoder)` must compile what sampling calls (not a bypassed forward)."""
    pipe = make_pipeline()
    reference = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    compiled = []

    def recording_backend(graph_module, example_inputs):
        compiled.append(graph_module)
        return graph_module.forward  # run the captured graph eagerly: no C++ compiler needed

    torch._dynamo.reset()
    pipe.decoder = torch.compile(pipe.decoder, backend=recording_backend)
    pipe.encoder = torch.compile(pipe.encoder, backend=recording_backend)
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert len(compiled) >= 1
    torch.testing.assert_close(out, reference)
    n = len(compiled)
    pipe.encode(torch.rand(2, 1, 16, 16))
    assert len(compiled) > n  # the encoder's compiled forward ran too
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(tmp_path, dtype):
    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path)
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path, torch_dtype=dtype)
    assert loaded.encoder.dtype == dtype and loaded.decoder.dtype == dtype
    out = loaded(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(out, ref, atol=0.05 if dtype == torch.bfloat16 else 1e-6, rtol=0)
    moved = make_pipeline().to(dtype)
    assert moved.decoder.dtype == dtype
    assert moved.reconstruct(torch.rand(1, 1, 16, 16), output_type="pt").images.dtype == torch.float32


# ---- the saved folder carries its code (diffusers' layout for custom pipelines on the Hub) --------------------


def test_saved_folder_has_the_remote_code_layout(tmp_path):
    import json

    make_pipeline().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_asintrovae", "AsIntroVAEPipeline"]
    assert index["encoder"] == ["modeling_asintrovae_encoder", "AsIntroVAEEncoder"]
    assert index["decoder"] == ["modeling_asintrovae_decoder", "AsIntroVAEDecoder"]
    import importlib
    import re

    from asintrovae_hf.pipelines.remote_code import BUNDLE_MODULES, MODEL_BUNDLE_MODULES

    # each code file is one bundle: after a one-line header, the sources of the bundled modules in order, each
    # without its single-line imports from this package (`from .x import ...`, `from ..x.y import ...`), joined by
    # two newlines
    intra_package = re.compile(r"^from (?:\.+|asintrovae_hf)\S* import [^\n]*\n", re.M)

    def bundled_sources(names):
        return [intra_package.sub("", Path(importlib.import_module(name).__file__).read_text()) for name in names]

    # the models' code: the same bundle in both component folders, from the package's one JSON reader to the models
    assert MODEL_BUNDLE_MODULES[0] == "asintrovae_hf.json_io"
    for path in ["encoder/modeling_asintrovae_encoder.py", "decoder/modeling_asintrovae_decoder.py"]:
        text = (tmp_path / path).read_text()
        assert text.startswith("# Generated from the `asintrovae_hf.json_io`, ")
        assert text.split("\n", 1)[1] == "\n\n".join(bundled_sources(MODEL_BUNDLE_MODULES))
    # the pipeline's code
    assert BUNDLE_MODULES[-1] == "asintrovae_hf.pipelines.pipeline_asintrovae"
    assert "asintrovae_hf.json_io" in BUNDLE_MODULES
    sources = bundled_sources(BUNDLE_MODULES)
    text = (tmp_path / "pipeline_asintrovae.py").read_text()
    assert text.startswith("# Generated from the `asintrovae_hf.objectives.elbo`, ")
    assert text.split("\n", 1)[1] == "\n\n".join(sources)


def test_shipped_modules_import_only_what_a_machine_without_the_plugin_has():
    """diffusers' remote-code loader downloads relative imports and requires every imported package."""
    import re

    from asintrovae_hf.pipelines.remote_code import MODEL_BUNDLE_MODULES, bundle_source

    for text in (bundle_source(), bundle_source(MODEL_BUNDLE_MODULES)):
        imports = re.findall(r"^\s*import\s+(\S+)\s*$", text, re.M) + re.findall(r"^\s*from\s+(\S+)\s+import", text, re.M)
        assert {name.split(".")[0] for name in imports} <= {
            "contextlib", "dataclasses", "functools", "importlib", "inspect", "json", "math", "os", "re", "sys",
            "typing", "numpy", "PIL", "torch",
            "diffusers", "huggingface_hub"}, imports


def test_saved_folder_loads_without_the_plugin(tmp_path):
    """`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` in a process that cannot import the
    plugin gives the same samples; without `trust_remote_code` diffusers refuses to run the folder's code."""
    import subprocess
    import sys

    pipe = make_pipeline(channels=3)
    pipe.save_pretrained(tmp_path / "pipe")
    expected = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np").images
    np.save(tmp_path / "expected.npy", expected)
    script = NO_PLUGIN + f"""
import numpy as np, torch
from diffusers import DiffusionPipeline
try:
    import asintrovae_hf
    raise SystemExit("the plugin is importable")
except ModuleNotFoundError:
    pass
try:
    DiffusionPipeline.from_pretrained({str(tmp_path / 'pipe')!r})
    raise SystemExit("loaded remote code without trust_remote_code")
except ValueError as err:
    assert "trust_remote_code" in str(err), err
pipe = DiffusionPipeline.from_pretrained({str(tmp_path / 'pipe')!r}, trust_remote_code=True)
assert type(pipe).__name__ == "AsIntroVAEPipeline" and "asintrovae_hf" not in type(pipe).__module__
out = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np").images
np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
print("OK")
"""
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
