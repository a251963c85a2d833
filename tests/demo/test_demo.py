"""The demo's plain functions (asintrovae_hf.demo), without a browser: each equals the pipeline call it shows."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from asintrovae_hf import demo as D
from asintrovae_hf.demo.app import _expected
from helpers import tiny_conditional_pipeline, tiny_image_pipeline, tiny_vector_pipeline


@pytest.fixture(autouse=True)
def restore_environment():
    """Gradio sets HF_HUB_DISABLE_TELEMETRY when its analytics are off: put the environment back after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def pipe():
    p = tiny_image_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def cond():
    p = tiny_conditional_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def pixels(image) -> np.ndarray:
    return np.asarray(image)


def digit_png(tmp_path, index=3, name="digit.png") -> str:
    from asintrovae_hf.evaluation.ood import digits_images

    path = tmp_path / name
    digits_images()[index].save(path)
    return str(path)


def test_import_asintrovae_hf_does_not_import_gradio():
    code = ("import sys, asintrovae_hf, asintrovae_hf.demo, asintrovae_hf.hub\n"
            "print('gradio' in sys.modules, 'gradio_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_sample_is_the_pipelines_sample(pipe):
    shown = D.sample(pipe, seed=7, num_images=1, temperature=1.0)
    expected = pipe(generator=torch.Generator().manual_seed(7)).images
    assert len(shown) == 1 and shown[0].mode == "L" and shown[0].size == (16, 16)
    np.testing.assert_array_equal(pixels(shown[0]), pixels(expected[0]))
    # temperature t: the same latents scaled by t; t = 0 decodes the prior's mean
    latents = pipe(batch_size=3, generator=torch.Generator().manual_seed(5), output_type="latent").images
    cooled = D.sample(pipe, seed=5, num_images=3, temperature=0.5)
    for a, b in zip(cooled, pipe(latents=latents * 0.5).images):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    zero = D.sample(pipe, seed=1, num_images=2, temperature=0)
    np.testing.assert_array_equal(pixels(zero[0]), pixels(pipe.decode(torch.zeros(1, 4)).images[0]))
    np.testing.assert_array_equal(pixels(zero[0]), pixels(zero[1]))
    assert not np.array_equal(pixels(D.sample(pipe, 8)[0]), pixels(shown[0]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed=-1), "seed must be an integer from 0"),
    (dict(seed=1.5), "seed must be an integer"),
    (dict(num_images=0), "number of images must be an integer from 1 to 64"),
    (dict(num_images=65), "number of images must be an integer from 1 to 64"),
    (dict(temperature=-0.1), "temperature must be a number from 0 to 10"),
    (dict(temperature="hot"), "temperature must be a number"),
])
def test_sample_refuses_bad_settings_in_one_line(pipe, kwargs, message):
    with pytest.raises(D.DemoError, match=message) as info:
        D.sample(pipe, **kwargs)
    assert "\n" not in str(info.value)


def test_class_conditional_sample_takes_the_class(cond):
    assert cond.num_classes == 3
    shown = D.sample(cond, seed=7, num_images=2, class_label=2)
    expected = cond(batch_size=2, generator=torch.Generator().manual_seed(7), class_labels=2).images
    for a, b in zip(shown, expected):
        np.testing.assert_array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(D.sample(cond, 7, 1, 1.0, 0)[0]), pixels(shown[0]))
    with pytest.raises(D.DemoError, match="class-conditional: pick a class from 0 to 2"):
        D.sample(cond, 7)
    with pytest.raises(D.DemoError, match="class must be an integer from 0 to 2"):
        D.sample(cond, 7, class_label=3)


def test_reconstruct_is_the_pipelines_reconstruction(pipe, tmp_path):
    path = digit_png(tmp_path)  # an 8x8 digit: the pipeline resizes it to 16x16
    seen, rec, error, mse = D.reconstruct(pipe, path)
    original = PIL.Image.open(path)
    np.testing.assert_array_equal(pixels(rec), pixels(pipe.reconstruct(original).images[0]))
    x = pipe.preprocess(original)
    np.testing.assert_array_equal(pixels(seen), np.rint(x[0, 0].numpy() * 255).astype(np.uint8))
    x_hat = pipe.reconstruct(original, output_type="pt").images
    np.testing.assert_array_equal(pixels(error), np.rint((x - x_hat).abs()[0, 0].numpy() * 255).astype(np.uint8))
    assert mse == pytest.approx(float((x - x_hat).pow(2).mean()), rel=1e-6)
    # a PIL image and an array in [0, 1] give the same; a class-conditional model reconstructs given the class
    np.testing.assert_array_equal(pixels(D.reconstruct(pipe, original)[1]), pixels(rec))
    np.testing.assert_array_equal(pixels(D.reconstruct(pipe, pixels(original) / 255.0)[1]), pixels(rec))


def test_reconstruct_with_a_class_and_from_a_drawing(cond):
    drawing = PIL.Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # a sketchpad: white strokes on a transparent canvas
    drawing.paste((255, 255, 255, 255), (16, 8, 48, 56))
    seen, rec, _, _ = D.reconstruct(cond, {"composite": drawing, "layers": [], "background": None}, 1)
    on_black = PIL.Image.new("RGB", (64, 64))
    on_black.paste((255, 255, 255), (16, 8, 48, 56))
    np.testing.assert_array_equal(pixels(rec), pixels(cond.reconstruct(on_black, class_labels=1).images[0]))
    assert seen.size == (8, 8) and pixels(seen)[0, 0] == 0 and pixels(seen)[4, 4] > 200  # light strokes on black


BROKEN = r"Cannot read the (first )?image \(broken.png\) as an image: "


@pytest.mark.parametrize("content, message", [
    (b"this is not an image", BROKEN + "cannot identify image file 'broken.png'$"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, BROKEN + r"\w"),
])
def test_broken_uploads_give_one_line(pipe, tmp_path, content, message):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    for call in (lambda: D.reconstruct(pipe, str(path)), lambda: D.score_image(pipe, str(path)),
                 lambda: D.interpolate(pipe, str(path), None)):
        with pytest.raises(D.DemoError, match=message) as info:
            call()
        assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)
    with pytest.raises(D.DemoError, match="No image: upload an image or draw one"):
        D.reconstruct(pipe, None)
    with pytest.raises(D.DemoError, match="No image"):
        D.reconstruct(pipe, {"composite": None})


def test_interpolate_between_uploads_or_seeds(pipe, tmp_path):
    a, b = digit_png(tmp_path, 1, "a.png"), digit_png(tmp_path, 7, "b.png")
    walk, frames = D.interpolate(pipe, a, b, num_steps=5)
    expected = pipe.interpolate(PIL.Image.open(a), PIL.Image.open(b), num_steps=5).images
    assert len(frames) == 5 and walk.size == (5 * 16, 16)
    for k, frame in enumerate(expected):
        np.testing.assert_array_equal(pixels(frames[k]), pixels(frame))
        np.testing.assert_array_equal(pixels(walk)[:, 16 * k:16 * (k + 1)], pixels(frame))
    # without uploads: the samples of the two seeds
    _, by_seed = D.interpolate(pipe, None, None, seed_a=3, seed_b=4, num_steps=3)
    ends = [pipe(generator=torch.Generator().manual_seed(s)).images[0] for s in (3, 4)]
    for got, want in zip(by_seed, pipe.interpolate(ends[0], ends[1], num_steps=3).images):
        np.testing.assert_array_equal(pixels(got), pixels(want))
    with pytest.raises(D.DemoError, match="number of steps must be an integer from 2 to 32"):
        D.interpolate(pipe, a, b, num_steps=1)


def test_interpolate_class_conditional(cond):
    _, frames = D.interpolate(cond, None, None, 0, 1, 4, class_label=2)
    ends = [cond(generator=torch.Generator().manual_seed(s), class_labels=2).images[0] for s in (0, 1)]
    for got, want in zip(frames, cond.interpolate(ends[0], ends[1], num_steps=4, class_labels=2).images):
        np.testing.assert_array_equal(pixels(got), pixels(want))


def test_score_percentile_and_saved_reference_scores(pipe, tmp_path):
    from asintrovae_hf.evaluation.ood import digits_images

    digits = digits_images()[:20]
    path = D.save_reference_scores(pipe, digits, tmp_path, num_samples=2, seed=3, source="twenty digits")
    assert path == str(tmp_path / "reference_scores.json")
    saved = json.loads((tmp_path / "reference_scores.json").read_text())
    assert saved["count"] == 20 and saved["num_samples"] == 2 and saved["seed"] == 3
    assert saved["source"] == "twenty digits" and len(saved["bits_per_dim"]) == 20
    # each reference score is the Score tab's score of that image (one generator per image, same seed)
    png = digit_png(tmp_path, 4)
    result = D.score_image(pipe, png, reference=saved)
    expected = pipe.score(PIL.Image.open(png), num_samples=2, generator=torch.Generator().manual_seed(3))
    assert result["neg_elbo"] == pytest.approx(float(expected.neg_elbo[0]), rel=1e-6)
    assert result["bits_per_dim"] == pytest.approx(float(expected.bits_per_dim[0]), rel=1e-6)
    assert result["neg_elbo"] == pytest.approx(saved["neg_elbo"][4], abs=1e-4)
    assert result["percentile"] == pytest.approx(100 * np.mean(np.array(saved["neg_elbo"]) <= result["neg_elbo"]))
    text = D.describe_score(result)
    assert "negative ELBO" in text and "bits per dimension" in text and "among 20 training images" in text
    # noise scores higher than the digits -> a higher percentile
    noise = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    assert D.score_image(pipe, noise, reference=saved)["percentile"] >= result["percentile"]
    # load_reference_scores finds them from the folder, or the folder the pipeline was loaded from
    assert D.load_reference_scores(str(tmp_path)) == saved
    pipe.save_pretrained(tmp_path)
    from asintrovae_hf import AsIntroVAEPipeline

    assert D.load_reference_scores(AsIntroVAEPipeline.from_pretrained(tmp_path)) == saved
    assert D.load_reference_scores(str(tmp_path / "nowhere")) is None
    (tmp_path / "reference_scores.json").write_text("{not json")
    assert D.load_reference_scores(str(tmp_path)) is None


def test_score_without_reference_says_so(pipe):
    result = D.score_image(pipe, np.zeros((16, 16), dtype=np.uint8))
    assert result["percentile"] is None and result["num_samples"] == D.SCORE_SAMPLES
    assert "No reference scores" in D.describe_score(result)
    assert D.load_reference_scores(pipe) is None  # built in memory: nothing saved with it


def test_percentile():
    assert D.percentile(1.0, [0.0, 1.0, 2.0, 3.0]) == 50.0
    assert D.percentile(-1, [0, 1]) == 0.0 and D.percentile(9, [0, 1]) == 100.0


def test_explore_basis_from_digits_is_cached_and_decodes(pipe):
    basis = D.explore_basis(pipe)
    assert "built-in digits" in basis.source and basis.components.shape == (4, 4)
    assert D.explore_basis(pipe) is basis  # computed once per pipeline
    torch.testing.assert_close(basis.components @ basis.components.T, torch.eye(4), atol=1e-5, rtol=0)
    assert torch.all(basis.scales[:-1] >= basis.scales[1:]) and torch.all(basis.scales > 0)
    # the mean is the mean of the digits' posterior means
    from asintrovae_hf.evaluation.ood import digits_images

    means = pipe.encode(digits_images()).latent_dist.mean
    torch.testing.assert_close(basis.mean, means.mean(0), atol=1e-5, rtol=1e-4)
    center = D.explore(pipe, basis, [0, 0, 0, 0])
    np.testing.assert_array_equal(pixels(center), pixels(pipe.decode(basis.mean[None]).images[0]))
    moved = D.explore(pipe, basis, [2.0, 0, 0, 0])
    z = basis.mean + 2.0 * basis.scales[0] * basis.components[0]
    np.testing.assert_array_equal(pixels(moved), pixels(pipe.decode(z[None]).images[0]))
    assert not np.array_equal(pixels(moved), pixels(center))
    with pytest.raises(D.DemoError, match="Explore sliders take values from -10 to 10"):
        D.explore(pipe, basis, [float("nan")])


def test_explore_basis_without_fitting_data_uses_prior_samples(cond):
    basis = D.explore_basis(cond)  # 3 classes: the 10 digit classes do not fit
    assert basis.source.startswith(f"{D.PRIOR_SAMPLES} images decoded from prior samples")
    image = D.explore(cond, basis, [1.0], class_label=1)
    assert image.size == (8, 8)
    given = D.explore_basis(cond, images=torch.rand(6, 1, 8, 8), class_labels=[0, 1, 2, 0, 1, 2], source="six")
    assert given.source == "six" and given.components.shape == (4, 4) and D.explore_basis(cond) is basis
    rgb = tiny_image_pipeline(channels=3, size=8)
    assert "prior samples" in D.explore_basis(rgb, count=16).source  # three channels: the digits do not fit


@pytest.mark.parametrize("which", ["unconditional", "conditional"])
def test_build_demo_has_every_tab(pipe, cond, which):
    pytest.importorskip("gradio")
    import gradio as gr

    model = pipe if which == "unconditional" else cond
    reference = {"neg_elbo": [1.0, 2.0], "source": "two"} if which == "unconditional" else None
    demo = D.build_demo(model, reference_scores=reference, title="tiny")
    assert isinstance(demo, gr.Blocks)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [t.label for t in tabs] == ["Sample", "Reconstruct", "Interpolate", "Score", "Explore"]
    markdown = " ".join(str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown))
    for line in D.TAB_DESCRIPTIONS.values():
        assert line.split("{")[0] in markdown
    assert ("No reference scores" in markdown) == (reference is None)
    api = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"sample", "reconstruct", "interpolate", "score", "explore"} <= api
    dropdowns = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)]
    assert len(dropdowns) == 5 and all(d.visible == bool(model.num_classes) for d in dropdowns)
    images = [b for b in demo.blocks.values() if isinstance(b, (gr.Image, gr.Gallery))]
    assert images and all(b.format == "png" for b in images)  # PNG, not Gradio's default WebP
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and (b.elem_id or "").startswith("explore")]
    assert len(sliders) == 4  # one per latent dimension of the tiny models


def test_build_demo_errors_are_one_line_gradio_errors(pipe):
    pytest.importorskip("gradio")
    import gradio as gr

    wrapped = _expected(lambda: D.sample(pipe, num_images=0))
    with pytest.raises(gr.Error) as info:
        wrapped()
    assert info.value.message == "number of images must be an integer from 1 to 64; got 0."
    with pytest.raises(D.DemoError, match="vector models"):
        D.build_demo(tiny_vector_pipeline())


def test_demo_script_saves_reference_scores_and_refuses_bad_pipelines(tmp_path, capsys):
    pytest.importorskip("gradio")
    from helpers import load_script

    script = load_script("demo")
    defaults = script.parse_args(["--pipeline", "x"])
    assert defaults.host == "127.0.0.1" and defaults.port is None and defaults.share is False  # local, free port
    folder = tmp_path / "pipe"
    tiny_image_pipeline().save_pretrained(folder)
    demo = script.prepare(script.parse_args(["--pipeline", str(folder), "--save_reference_scores"]))
    saved = json.loads((folder / "reference_scores.json").read_text())
    assert saved["count"] == 1797 and saved["source"] == "the built-in digits"
    assert "saved the reference scores of 1797 digits" in capsys.readouterr().out
    markdown = " ".join(str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert "No reference scores" not in markdown  # the Score tab found them
    with pytest.raises(SystemExit, match=r"^error: cannot load the pipeline '.*nowhere'"):
        script.prepare(script.parse_args(["--pipeline", str(tmp_path / "nowhere")]))
    with pytest.raises(SystemExit, match="--save_reference_scores writes into the pipeline's folder"):
        script.prepare(script.parse_args(["--pipeline", "acme/not-a-folder", "--save_reference_scores"]))
