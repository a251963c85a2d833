"""Class-conditional models end to end, and ELBO scoring (`pipe.score`)."""

import math

import datasets
import numpy as np
import pytest
import torch

from asintrovae_hf import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEPipeline,
    IntrospectiveObjective,
    train_step,
)
from asintrovae_hf.data import load_digits_dataset, resolve_class_column
from asintrovae_hf.training.loop import train
from asintrovae_hf.training.args import parse_args
from helpers import TINY, load_script, tiny_image_pipeline, tiny_vector_pipeline


def conditional_pipeline(num_classes=3):
    torch.manual_seed(0)
    kw = dict(sample_size=8, latent_dim=4, block_out_channels=(8, 16), num_class_embeds=num_classes)
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, **kw).eval())


# ---- class-conditional models ------------------------------------------------------------------------------------


def test_labels_condition_both_networks_and_are_checked():
    pipe = conditional_pipeline()
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    a = pipe.decoder(z, torch.tensor([0, 0]))
    b = pipe.decoder(z, torch.tensor([1, 1]))
    assert not torch.allclose(a, b)
    x = torch.rand(2, 1, 8, 8)
    assert not torch.allclose(pipe.encoder(x, torch.tensor([0, 0]))[0], pipe.encoder(x, torch.tensor([2, 2]))[0])
    with pytest.raises(ValueError, match=r"class-conditional \(3 classes\): pass class_labels"):
        pipe.decoder(z)
    with pytest.raises(ValueError, match=r"class_labels must be 2 integers in \[0, 3\); got \[0, 3\]"):
        pipe.decoder(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="is not class-conditional"):
        tiny_image_pipeline().decoder(torch.randn(1, 4), torch.tensor([0]))


def test_pipeline_samples_per_class_and_round_trips(tmp_path):
    pipe = conditional_pipeline()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    one_label = pipe(batch_size=3, class_labels=1, generator=gen(), output_type="pt").images
    listed = pipe(class_labels=[1, 1, 1], generator=gen(), output_type="pt").images
    torch.testing.assert_close(one_label, listed)
    assert not torch.allclose(listed, pipe(class_labels=[2, 2, 2], generator=gen(), output_type="pt").images)
    x = torch.rand(3, 1, 8, 8)
    assert pipe.reconstruct(x, class_labels=[0, 1, 2], output_type="pt").images.shape == (3, 1, 8, 8)
    assert pipe.interpolate(x[:1], x[1:2], num_steps=3, class_labels=2, output_type="pt").images.shape[0] == 3
    with pytest.raises(ValueError, match="class_labels must be an int or 3 integers"):
        pipe(batch_size=3, class_labels=[0.5, 1.0, 2.0])
    pipe.save_pretrained(tmp_path)
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path)
    assert loaded.decoder.config.num_class_embeds == 3
    torch.testing.assert_close(loaded(class_labels=[1, 1, 1], generator=gen(), output_type="pt").images, listed)


def test_fake_labels_come_from_the_batch_labels(monkeypatch):
    """The objective's fake batch is decoded with labels drawn from the real batch's labels."""
    pipe = conditional_pipeline(num_classes=10)
    seen = []
    real_decoder_forward = AsIntroVAEDecoder.forward

    def recording(self, z, class_labels=None):
        seen.append(None if class_labels is None else class_labels.tolist())
        return real_decoder_forward(self, z, class_labels)

    monkeypatch.setattr(AsIntroVAEDecoder, "forward", recording)
    encoder, decoder = pipe.encoder.train(), pipe.decoder.train()
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.01)  # noqa: E731
    labels = torch.tensor([7, 7, 8, 8, 9, 9])
    train_step(IntrospectiveObjective(objective="as-introvae", beta_neg=4.0), encoder, decoder, opt(encoder),
               opt(decoder), torch.rand(6, 1, 8, 8), 4, c=0.5, labels=labels, generator=torch.Generator().manual_seed(0))
    assert seen and all(s is not None and set(s) <= {7, 8, 9} for s in seen)
    fake_labels = seen[0]  # the first decoder call of the encoder step decodes z_f with the fake labels
    assert fake_labels != labels.tolist() or len(set(map(tuple, seen))) > 1


def test_class_column_resolution():
    digits = load_digits_dataset()
    assert resolve_class_column(digits, "label") == 10
    ints = datasets.Dataset.from_dict({"image": [None] * 3, "y": [0, 4, 2]})
    assert resolve_class_column(ints, "y") == 5
    with pytest.raises(ValueError, match=r"Class column 'kind' not found.*'label'"):
        resolve_class_column(digits, "kind")
    floats = datasets.Dataset.from_dict({"y": [0.5, 1.5]})
    with pytest.raises(ValueError, match="needs integer class labels"):
        resolve_class_column(floats, "y")


def test_training_with_a_class_column(tmp_path, fresh_accelerate):
    summary = train(parse_args(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "2",
                                       "--class_column", "label"]))
    assert summary["global_step"] == 2
    pipe = AsIntroVAEPipeline.from_pretrained(tmp_path / "o")
    assert pipe.encoder.config.num_class_embeds == 10 and pipe.decoder.config.num_class_embeds == 10
    assert len(pipe(class_labels=list(range(10))).images) == 10
    # the evaluation script reads the labels of the digits for the FID's samples and the reconstructions
    import json
    script = load_script("evaluate")
    out = tmp_path / "metrics.json"
    assert script.main(["--pipeline", str(tmp_path / "o"), "--num_samples", "20", "--max_real", "40", "--metrics",
                        "digits_fid", "reconstruction", "class_accuracy", "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["digits_fid"] > 0 and 0 <= metrics["accuracy_mean"] <= 1 and metrics["reconstruction_mse"] > 0


def test_evaluation_of_a_conditional_pipeline_uses_the_real_labels(monkeypatch):
    """Samples for the FID draw their labels from the real labels, reconstructions use each image's own label."""
    from asintrovae_hf.evaluation.image_metrics import evaluate_pipeline

    pipe = conditional_pipeline(num_classes=3)
    seen = {"decode": [], "reconstruct": []}
    for name in seen:
        original = getattr(pipe, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            seen[_name].append(torch.as_tensor(kwargs["class_labels"]).clone())
            return _original(*args, **kwargs)

        monkeypatch.setattr(pipe, name, spy)
    images = torch.rand(6, 1, 8, 8)
    labels = torch.tensor([2, 2, 2, 2, 0, 0])
    evaluate_pipeline(pipe, images, num_samples=40, metrics=("digits_fid", "reconstruction"), real_labels=labels)
    sampled = torch.cat(seen["decode"])
    assert len(sampled) == 40 and set(sampled.tolist()) == {0, 2}  # class 1 is absent from the data
    assert torch.equal(torch.cat(seen["reconstruct"]), labels)
    with pytest.raises(ValueError, match="class-conditional.*labels"):
        evaluate_pipeline(pipe, images, num_samples=4, metrics=("digits_fid",))


# ---- ELBO scoring ------------------------------------------------------------------------------------------------


def test_score_matches_a_hand_computed_elbo():
    """One posterior sample, replayed: -ELBO = ||x - G(z)||^2 + D/2 log(pi) + KL(q || N(0, I))."""
    pipe = tiny_vector_pipeline(features=3, latent_dim=2)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    out = pipe.score(x, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mu, logvar = pipe.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
        nll = (x - pipe.decoder(z)).pow(2).sum(1) + 1.5 * math.log(math.pi)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    torch.testing.assert_close(out.neg_elbo, nll + kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.bits_per_dim, (nll + kl) / (3 * math.log(2)), rtol=1e-5, atol=1e-6)


def test_importance_weighting_tightens_the_bound_and_batches_do_not_matter():
    pipe = tiny_image_pipeline(channels=1, size=8, block_out_channels=(8,))
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    elbo = pipe.score(x, num_samples=32, generator=torch.Generator().manual_seed(1)).neg_elbo
    iw = pipe.score(x, num_samples=32, importance_weighted=True, generator=torch.Generator().manual_seed(1)).neg_elbo
    assert iw.mean() < elbo.mean()  # the importance-weighted bound is the tighter one
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(len(x))]  # noqa: E731
    one = pipe.score(x, batch_size=5, num_samples=3, generator=gens()).neg_elbo
    whole = pipe.score(x, batch_size=64, num_samples=3, generator=gens()).neg_elbo
    torch.testing.assert_close(one, whole, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        pipe.score(x, num_samples=0)


def test_score_separates_data_from_noise_for_a_trained_model(tmp_path, fresh_accelerate):
    """After a short training run, the digits get a lower negative ELBO than uniform noise."""
    train(parse_args(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "20", "--objective", "vae"]))
    pipe = AsIntroVAEPipeline.from_pretrained(tmp_path / "o")
    digits = np.stack([np.asarray(im.resize((8, 8))) for im in load_digits_dataset()["image"][:32]])[..., None]
    noise = np.random.default_rng(0).integers(0, 256, digits.shape, dtype=np.uint8)
    data_score = pipe.score(digits).neg_elbo
    noise_score = pipe.score(noise).neg_elbo
    assert data_score.mean() < noise_score.mean()


def test_class_accuracy_of_a_conditional_pipeline():
    from asintrovae_hf.evaluation.image_metrics import class_accuracy

    pipe = conditional_pipeline(num_classes=10)
    result = class_accuracy(pipe, num_per_class=4)
    assert set(result) == {f"class_{i}" for i in range(10)} | {"mean"}
    assert all(0 <= v <= 1 for v in result.values())
    with pytest.raises(ValueError, match="class-conditional"):
        class_accuracy(tiny_image_pipeline())


def test_sample_grid_script_gives_a_row_per_class(tmp_path):
    """`scripts/sample_grid.py`: one row per class for a conditional pipeline, `rows` rows for another; blocks side by side."""
    from PIL import Image

    script = load_script("sample_grid")
    conditional_pipeline(num_classes=3).save_pretrained(tmp_path / "cond")
    tiny_image_pipeline().save_pretrained(tmp_path / "plain")
    cond_block = script.sample_block(AsIntroVAEPipeline.from_pretrained(tmp_path / "cond"), rows=5, cols=4, seed=0)
    plain_block = script.sample_block(AsIntroVAEPipeline.from_pretrained(tmp_path / "plain"), rows=5, cols=4, seed=0)
    tile = plain_block.height // 5
    assert plain_block.size == (4 * tile, 5 * tile) and cond_block.size == (4 * tile, 3 * tile)
    out = tmp_path / "grid.png"
    assert script.main(["--pipeline", str(tmp_path / "cond"), str(tmp_path / "plain"), "--name", "c", "p",
                        "--rows", "5", "--cols", "4", "--output", str(out)]) == 0
    assert Image.open(out).size == (8 * tile + 8, 5 * tile + 18)
