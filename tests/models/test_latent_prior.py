"""The fitted latent sampler (issue #32, item 7): `GaussianMixtureLatentPrior`, `fit_latent_prior`, the pipeline's
optional `latent_prior` component and `pipe(..., latent_sampler="fitted")`, saved and loaded with and without the
plugin and by Hub id."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.evaluation.heldout import split_images
from asintrovae_hf.models import GaussianMixtureLatentPrior, fit_latent_prior
from helpers import NO_PLUGIN, tiny_image_pipeline

TRUE_MEANS = torch.tensor([[-4.0, 0.0, 1.0], [4.0, 1.0, -1.0], [0.0, 5.0, 0.0]])


def synthetic_latents(per_component=400, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([m + std * torch.randn(per_component, 3, generator=g) for m in TRUE_MEANS])


@pytest.fixture(scope="module")
def fitted():
    """A tiny pipeline (16 x 16, latent_dim 4) and a 4-component mixture fitted to 300 training digits."""
    pipe = tiny_image_pipeline(channels=1, size=16, latent_dim=4)
    pipe.set_progress_bar_config(disable=True)
    train, _ = split_images("digits", "train", 16)
    return pipe, fit_latent_prior(pipe, train[:300], num_components=4, seed=0), train[:300]


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_fit_recovers_known_components(covariance_type):
    prior = GaussianMixtureLatentPrior.from_latents(synthetic_latents(), num_components=3,
                                                    covariance_type=covariance_type)
    order = [int((prior.means - m).norm(dim=1).argmin()) for m in TRUE_MEANS]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(prior.means[order], TRUE_MEANS, atol=0.06, rtol=0)
    torch.testing.assert_close(prior.weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(prior.weights, torch.full((3,), 1 / 3), atol=1e-3, rtol=0)
    variances = prior.covariances if covariance_type == "diag" else torch.diagonal(prior.covariances, dim1=1, dim2=2)
    torch.testing.assert_close(variances, torch.full((3, 3), 0.09), atol=0.02, rtol=0)
    # draws follow the mixture: each lands near a true mean, in the right proportions
    draws = prior.sample(3000, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(draws, TRUE_MEANS).argmin(1)
    assert torch.cdist(draws, TRUE_MEANS).min(1).values.max() < 2.5
    torch.testing.assert_close(torch.bincount(nearest).float() / 3000, torch.full((3,), 1 / 3), atol=0.04, rtol=0)
    # log_prob: a mean is far likelier than a point between components, and matches the density by hand
    inside, between = prior.log_prob(TRUE_MEANS), prior.log_prob(torch.tensor([[0.0, 0.0, 0.0]]))
    assert inside.min() > between.max() + 10
    expected = np.log(1 / 3) - 1.5 * np.log(2 * np.pi * 0.09)
    np.testing.assert_allclose(inside.numpy(), expected, atol=0.3)


def test_a_fresh_mixture_is_the_standard_prior():
    prior = GaussianMixtureLatentPrior(latent_dim=2, num_components=3)
    z = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z.double()).sum(1)
    torch.testing.assert_close(prior.log_prob(z), expected)


def test_fit_on_a_pipeline_and_digits_is_sane(fitted):
    pipe, prior, train = fitted
    assert prior.config.latent_dim == 4 and prior.config.num_components == 4
    assert prior.weights.dtype == torch.float32 and (prior.weights > 0).all()
    torch.testing.assert_close(prior.weights.sum(), torch.tensor(1.0))
    means = pipe.encode(train).latent_dist.mean
    assert (prior.means >= means.min(0).values - 1e-4).all() and (prior.means <= means.max(0).values + 1e-4).all()
    # the component means average to the latents' mean, the variances lie below the latents' overall variance
    torch.testing.assert_close((prior.weights[:, None] * prior.means).sum(0), means.mean(0), atol=1e-3, rtol=1e-3)
    assert torch.isfinite(prior.covariances).all() and (prior.covariances > 0).all()
    assert (prior.covariances <= means.var(0)[None] * 1.01 + 1e-5).all()
    assert torch.isfinite(prior.log_prob(means)).all()


def test_fitted_sampling_is_deterministic_and_differs_from_the_prior(fitted):
    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        draw = lambda sampler, seed=5, **kw: pipe(  # noqa: E731
            batch_size=6, generator=torch.Generator().manual_seed(seed), output_type="latent",
            latent_sampler=sampler, **kw).images
        a, b, other, standard = draw("fitted"), draw("fitted"), draw("fitted", seed=6), draw("prior")
        assert torch.equal(a, b) and not torch.equal(a, other) and not torch.equal(a, standard)
        assert torch.equal(standard, pipe(batch_size=6, generator=torch.Generator().manual_seed(5),
                                          output_type="latent").images)  # the default is the prior
        assert torch.equal(a, prior.sample(6, generator=torch.Generator().manual_seed(5)))
        # one generator per sample: each latent independent of the rest of the batch
        gens = lambda: [torch.Generator().manual_seed(s) for s in range(4)]  # noqa: E731
        batch = pipe(batch_size=4, generator=gens(), output_type="latent", latent_sampler="fitted").images
        alone = pipe(batch_size=1, generator=gens()[2:3], output_type="latent", latent_sampler="fitted").images
        assert torch.equal(batch[2:3], alone)
        images = pipe(batch_size=3, generator=torch.Generator().manual_seed(0), output_type="np",
                      latent_sampler="fitted").images
        again = pipe.decode(prior.sample(3, generator=torch.Generator().manual_seed(0)), output_type="np").images
        np.testing.assert_array_equal(images, again)
    finally:
        pipe.latent_prior = None


def test_fitted_without_a_component_is_refused_in_one_line():
    pipe = tiny_image_pipeline()
    with pytest.raises(ValueError, match="fit_latent_prior") as err:
        pipe(batch_size=2, latent_sampler="fitted")
    assert "\n" not in str(err.value) and "latent_prior" in str(err.value)
    with pytest.raises(ValueError, match="latent_sampler must be one of 'prior', 'fitted'"):
        pipe(batch_size=2, latent_sampler="gmm")
    with pytest.raises(ValueError, match="latent_dim 3; the decoder's is 4"):
        pipe.latent_prior = GaussianMixtureLatentPrior(latent_dim=3, num_components=2)
    with pytest.raises(ValueError, match="latent_dim 3; the decoder's is 4"):
        AsIntroVAEPipeline(encoder=pipe.encoder, decoder=pipe.decoder,
                           latent_prior=GaussianMixtureLatentPrior(latent_dim=3, num_components=2))


def test_save_load_round_trip_is_bit_equal(fitted, tmp_path):
    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p")
        expected = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="np",
                        latent_sampler="fitted").images
    finally:
        pipe.latent_prior = None
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["latent_prior"] == ["modeling_asintrovae_latent_prior", "GaussianMixtureLatentPrior"]
    assert sorted(os.listdir(tmp_path / "p" / "latent_prior")) == [
        "config.json", "diffusion_pytorch_model.safetensors", "modeling_asintrovae_latent_prior.py"]
    saved = load_file(tmp_path / "p" / "latent_prior" / "diffusion_pytorch_model.safetensors")
    assert set(saved) == {"weights", "means", "covariances"}
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path / "p")
    assert type(loaded.latent_prior) is GaussianMixtureLatentPrior
    assert loaded.latent_prior.config.num_components == 4 and loaded.latent_prior.config.covariance_type == "diag"
    for name, value in prior.state_dict().items():
        assert torch.equal(loaded.latent_prior.state_dict()[name], value), name
    out = loaded(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="np",
                 latent_sampler="fitted").images
    np.testing.assert_array_equal(out, expected)
    assert AsIntroVAEPipeline.from_pipe(loaded).latent_prior is loaded.latent_prior
    # a component passed to from_pretrained replaces the saved one, as for the encoder and decoder
    other = GaussianMixtureLatentPrior(latent_dim=4, num_components=2)
    assert AsIntroVAEPipeline.from_pretrained(tmp_path / "p", latent_prior=other).latent_prior is other
    # removed again, the pipeline saves as one that never had it
    loaded.latent_prior = None
    loaded.save_pretrained(tmp_path / "q")
    assert "latent_prior" not in json.loads((tmp_path / "q" / "model_index.json").read_text())


def test_a_pipeline_without_the_component_saves_and_loads_as_before(tmp_path):
    pipe = tiny_image_pipeline()
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert set(index) == {"_class_name", "_diffusers_version", "encoder", "decoder"}
    assert sorted(os.listdir(tmp_path / "p")) == ["decoder", "encoder", "model_index.json", "pipeline_asintrovae.py"]
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path / "p")
    assert loaded.latent_prior is None
    np.testing.assert_array_equal(
        loaded(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images,
        pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images)


def test_a_wrong_class_for_the_component_is_refused(fitted, tmp_path):
    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p")
    finally:
        pipe.latent_prior = None
    path = tmp_path / "p" / "model_index.json"
    index = json.loads(path.read_text())
    index["latent_prior"] = ["modeling_asintrovae_latent_prior", "AsIntroVAEDecoder"]
    path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="entry 'latent_prior'.*GaussianMixtureLatentPrior"):
        AsIntroVAEPipeline.from_pretrained(tmp_path / "p")


def test_damaged_mixture_weights_are_refused():
    prior = GaussianMixtureLatentPrior(latent_dim=2, num_components=2)
    prior.weights.fill_(0.7)
    with pytest.raises(ValueError, match="sum to 1"):
        prior.sample(2)
    prior.weights.fill_(0.5)
    prior.covariances[0, 0] = -1.0
    with pytest.raises(ValueError, match="variances must be positive"):
        prior.sample(2)


def test_it_loads_without_the_plugin_with_the_component(fitted, tmp_path):
    """`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where `asintrovae_hf` cannot be imported:
    the component loads from its shipped code and `latent_sampler="fitted"` gives the same samples."""
    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p")
        for sampler in ("fitted", "prior"):
            np.save(tmp_path / f"{sampler}.npy", pipe(batch_size=3, generator=torch.Generator().manual_seed(7),
                                                      output_type="np", latent_sampler=sampler).images)
    finally:
        pipe.latent_prior = None
    tiny_image_pipeline().save_pretrained(tmp_path / "without")
    script = NO_PLUGIN + f"""
import numpy as np, torch
from diffusers import DiffusionPipeline
folder = {str(tmp_path)!r}
pipe = DiffusionPipeline.from_pretrained(folder + "/p", trust_remote_code=True)
assert "asintrovae_hf" not in type(pipe).__module__ and "asintrovae_hf" not in type(pipe.latent_prior).__module__
assert type(pipe.latent_prior).__name__ == "GaussianMixtureLatentPrior"
for sampler in ("fitted", "prior"):
    out = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np",
               latent_sampler=sampler).images
    np.testing.assert_array_equal(out, np.load(folder + f"/{{sampler}}.npy"))
plain = DiffusionPipeline.from_pretrained(folder + "/without", trust_remote_code=True)
assert plain.latent_prior is None
try:
    plain(batch_size=1, latent_sampler="fitted")
    raise SystemExit("fitted sampling without a component was not refused")
except ValueError as err:
    assert "fit_latent_prior" in str(err)
pipe.save_pretrained(folder + "/again")  # saved again from the remote code, it keeps the component
again = DiffusionPipeline.from_pretrained(folder + "/again", trust_remote_code=True)
assert torch.equal(again.latent_prior.means, pipe.latent_prior.means)
print("OK")
"""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path / "again")  # and with the plugin
    assert type(loaded.latent_prior) is GaussianMixtureLatentPrior


def test_loading_by_hub_id_fetches_the_component(fake_hub, fitted, tmp_path):
    """Pushed to the fake Hub, the pipeline loads by id, with the plugin and without it (`trust_remote_code`),
    with its `latent_prior`; a pipeline without one loads by id as before."""
    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p", push_to_hub=True, repo_id="with-prior")
        expected = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np",
                        latent_sampler="fitted").images
    finally:
        pipe.latent_prior = None
    tiny_image_pipeline().save_pretrained(tmp_path / "q", push_to_hub=True, repo_id="without-prior")
    repo, plain = f"{fake_hub.user}/with-prior", f"{fake_hub.user}/without-prior"
    assert {"latent_prior/config.json", "latent_prior/diffusion_pytorch_model.safetensors",
            "latent_prior/modeling_asintrovae_latent_prior.py"} <= set(fake_hub.list_files(repo))
    np.save(tmp_path / "expected.npy", expected)
    check = f"""
import numpy as np, torch
out = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np", latent_sampler="fitted").images
np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
assert plain.latent_prior is None
print("OK")
"""
    loads = {
        "plugin": ("from asintrovae_hf import AsIntroVAEPipeline as P\n", "", {}),
        "no-plugin": ("from diffusers import DiffusionPipeline as P\n", NO_PLUGIN,
                      {"HF_MODULES_CACHE": str(tmp_path / "modules")}),
    }
    for name, (load, prefix, extra) in loads.items():
        kw = "" if name == "plugin" else ", trust_remote_code=True"
        script = (prefix + load + f"pipe = P.from_pretrained({repo!r}, cache_dir={str(tmp_path / name)!r}{kw})\n"
                  + f"plain = P.from_pretrained({plain!r}, cache_dir={str(tmp_path / name)!r}{kw})\n" + check)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                                env=fake_hub.subprocess_env(OMP_NUM_THREADS="1", **extra))
        assert result.returncode == 0 and result.stdout.strip().endswith("OK"), (name, result.stderr[-3000:])


def test_the_sample_command_takes_latent_sampler(fitted, tmp_path, capsys):
    from asintrovae_hf.commands import sample

    pipe, prior, _ = fitted
    pipe.latent_prior = prior
    try:
        pipe.save_pretrained(tmp_path / "p")
    finally:
        pipe.latent_prior = None
    tiny_image_pipeline().save_pretrained(tmp_path / "without")
    common = ["--num_images", "5", "--batch_size", "2", "--seed", "3", "--output_type", "npy", "--device", "cpu"]
    assert sample.main(["--pipeline", str(tmp_path / "p"), "--latent_sampler", "fitted", "--output_dir",
                        str(tmp_path / "out"), *common]) == 0
    # image i drawn with seed + i, whatever the batch size: each latent from its own generator
    latents = prior.sample(5, generator=[torch.Generator().manual_seed(3 + i) for i in range(5)])
    expected = pipe.decode(latents, output_type="np").images
    np.testing.assert_allclose(np.load(tmp_path / "out" / "samples.npy"), expected, atol=1e-6, rtol=0)
    capsys.readouterr()
    assert sample.main(["--pipeline", str(tmp_path / "without"), "--latent_sampler", "fitted", "--output_dir",
                        str(tmp_path / "none"), *common]) == 1
    assert "fit_latent_prior" in capsys.readouterr().err
