"""Image metrics of a saved pipeline: reconstruction MSE/PSNR, digits FID, the Inception FID's weight handling."""

import json
import math

import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.evaluation.image_metrics import InceptionFeatures, evaluate_pipeline, fid, reconstruction_metrics, sample_images


def tiny_pipeline(size=16):
    torch.manual_seed(0)
    kw = dict(sample_size=size, latent_dim=4, block_out_channels=(8, 16))
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, **kw).eval())


def test_reconstruction_metrics_match_direct_computation():
    pipe = tiny_pipeline()
    images = torch.rand(10, 1, 16, 16)
    metrics = reconstruction_metrics(pipe, images, batch_size=4)
    recs = pipe.reconstruct(images, output_type="pt").images
    per_image = (recs - images).pow(2).flatten(1).mean(1)
    assert metrics["reconstruction_mse"] == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert metrics["psnr"] == pytest.approx((10 * torch.log10(1 / per_image)).mean().item(), rel=1e-5)


def test_samples_are_deterministic_and_in_range():
    pipe = tiny_pipeline()
    a, b = sample_images(pipe, 5, seed=3, batch_size=2), sample_images(pipe, 5, seed=3)
    assert a.shape == (5, 1, 16, 16) and torch.allclose(a, b, atol=1e-5) and a.min() >= 0 and a.max() <= 1


def test_digits_fid_ranks_real_data_above_an_untrained_model():
    from asintrovae_hf.data import ImageTransform, load_digits_dataset

    dataset = load_digits_dataset()
    transform = ImageTransform(16, 1, center_crop=True)
    real = torch.stack([transform(im) for im in dataset["image"][:600]])
    other = torch.stack([transform(im) for im in dataset["image"][600:1200]])
    results = evaluate_pipeline(tiny_pipeline(), real, num_samples=300)
    assert set(results) >= {"digits_fid", "reconstruction_mse", "psnr"}
    from asintrovae_hf.evaluation.digits_classifier import digits_fid

    real_vs_real = digits_fid(real, other, value_range=(0, 1))
    assert results["digits_fid"] > 10 * real_vs_real


def test_inception_fid_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("ASINTROVAE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match=r"inception-2015-12-05\.pt.*--inception_weights"):
        evaluate_pipeline(tiny_pipeline(), torch.rand(4, 1, 16, 16), num_samples=4, metrics=("fid",))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a loadable TorchScript"):
        InceptionFeatures(str(bad))
    with pytest.raises(ValueError, match="Unknown metrics"):
        evaluate_pipeline(tiny_pipeline(), torch.rand(4, 1, 16, 16), num_samples=4, metrics=("is",))


class FakeInception(torch.nn.Module):
    """Stands in for the TorchScript Inception: uint8 N x 3 x H x W -> per-channel statistics as features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def test_inception_path_with_a_torchscript_network(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(FakeInception()).save(str(path))
    features = InceptionFeatures(str(path))
    images = torch.rand(64, 1, 16, 16)
    assert features(images).shape == (64, 9)
    assert fid(features, images, images) == pytest.approx(0.0, abs=1e-6)
    assert fid(features, images, images * 0.3) > 0.01
    results = evaluate_pipeline(tiny_pipeline(), images, num_samples=32, metrics=("fid",),
                                inception_weights=str(path))
    assert math.isfinite(results["fid"]) and results["fid"] > 0


def test_evaluate_script_writes_json(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    spec = importlib.util.spec_from_file_location("evaluate", Path(__file__).parents[2] / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "metrics.json"
    assert module.main(["--pipeline", str(tmp_path / "pipe"), "--num_samples", "64", "--max_real", "100",
                        "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["num_real"] == 100 and results["digits_fid"] > 0 and 0 < results["reconstruction_mse"] < 1
    assert module.main(["--pipeline", str(tmp_path / "pipe"), "--metrics", "fid"]) == 1
    assert "--inception_weights" in capsys.readouterr().err


class StandInFeatures(torch.nn.Module):
    """A small fixed feature network in place of Inception (torchmetrics takes any module)."""

    num_features = 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.LazyLinear(16))

    def forward(self, images):
        return self.net(images.float())


def test_torchmetrics_fid_matches_the_frechet_distance_of_the_same_features():
    from asintrovae_hf.evaluation.image_metrics import torchmetrics_fid
    from asintrovae_hf.evaluation.frechet import frechet_distance_from_features

    rng = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 16, 16, generator=rng)
    fake = (torch.rand(300, 1, 16, 16, generator=rng) * 0.7).clamp(0, 1)
    features = StandInFeatures()
    features(real[:1].repeat(1, 3, 1, 1))  # materialise the lazy layer
    value = torchmetrics_fid(real, fake, feature=features, batch_size=64)
    with torch.no_grad():
        ours = frechet_distance_from_features(features(real.repeat(1, 3, 1, 1)), features(fake.repeat(1, 3, 1, 1)))
    assert value == pytest.approx(ours, rel=1e-3)
    assert torchmetrics_fid(real, real, feature=features) == pytest.approx(0.0, abs=1e-3)


def test_torchmetrics_fid_without_its_extra_names_it(monkeypatch):
    import importlib.util

    from asintrovae_hf.evaluation.image_metrics import torchmetrics_fid

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchmetrics" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"pip install 'asintrovae-hf\[fid\]'"):
        torchmetrics_fid(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
