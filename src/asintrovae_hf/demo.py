"""A Gradio demo for any `AsIntroVAEPipeline`: sample, reconstruct, interpolate, score and explore the latent space.

`build_demo(pipe)` returns a `gradio.Blocks` (`pip install "asintrovae-hf[demo]"`); `asintrovae-demo` serves it and
`asintrovae-push-space` puts it on a Hugging Face Space. The work is done by the plain functions of this module, which
take and return PIL images, strings and numbers (the tests call them without a browser); the Gradio wiring in
`build_demo` only passes values through and turns the package's expected errors into `gr.Error` one-liners.

Gradio is imported only inside `build_demo`: `import asintrovae_hf` (and this module) stays light.

Score tab: the percentile of an image's negative ELBO among the scores of the training data's images, saved next to
the pipeline by `save_reference_scores` as `reference_scores.json` (see there). Explore tab: principal directions of
the posterior means of a data set, computed once per pipeline (`explore_basis`): the images given to `build_demo`,
else the built-in digits when the model takes one-channel images (and, for a class-conditional model, has at least
their 10 classes) and the `[train]` extra is installed, else images decoded from prior samples.
"""

import json
import math
import os
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import PIL.Image
import torch

from .errors import one_line
from .json_io import read_json

REFERENCE_SCORES_FILE = "reference_scores.json"
MAX_IMAGES = 64  # the most samples the Sample tab draws at once
MAX_STEPS = 32  # the longest interpolation
MAX_SLIDERS = 8  # principal directions offered in the Explore tab
SLIDER_RANGE = 3.0  # sliders move up to this many standard deviations along a direction
SCORE_SAMPLES = 4  # posterior samples per image for a score (the reference scores record their own)
PRIOR_SAMPLES = 512  # decoded prior samples for the Explore basis when no data fits

TAB_DESCRIPTIONS = {
    "sample": "The decoder turns latents drawn from the prior z ~ N(0, t² I) into images (t: the temperature).",
    "reconstruct": "The encoder maps the image to its posterior q(z|x); the decoder decodes the posterior mean.",
    "interpolate": "Both images are encoded; the decoder decodes evenly spaced points on the line between their "
                   "posterior means.",
    "score": "The model scores the image by its negative ELBO (an upper bound on -log p(x), lower = more typical of "
             "its training data).",
    "explore": "The decoder decodes one latent moved along the main directions (principal components) of the "
               "posterior means of {source}.",
}


class DemoError(ValueError):
    """A bad input to the demo (no image, an unreadable file, a value out of range): shown as one line."""


# ---- inputs ------------------------------------------------------------------------------------------------------


def _check_int(name: str, value, low: int, high: int) -> int:
    if value is None or isinstance(value, bool):
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.")
    return int(number)


def _class_label(pipe, class_label) -> Optional[int]:
    """The class of a class-conditional pipeline (an int in `[0, num_classes)`); `None` for an unconditional one."""
    if not pipe.num_classes:
        return None
    if class_label is None or class_label == "":
        raise DemoError(f"This model is class-conditional: pick a class from 0 to {pipe.num_classes - 1}.")
    return _check_int("class", class_label, 0, pipe.num_classes - 1)


def load_image(image, what: str = "image") -> PIL.Image.Image:
    """
    An input image as PIL: a PIL image, a file path, a NumPy array, or a Gradio sketchpad value (a dict whose
    `"composite"` is the drawing). Transparent parts (a drawing's background) are laid on black, since the built-in
    digits are light strokes on black. A missing image or an unreadable file raises a one-line `DemoError`.
    """
    if isinstance(image, dict):  # gr.Sketchpad / gr.ImageEditor: {"background", "layers", "composite"}
        image = image.get("composite")
    if image is None or (isinstance(image, str) and not image):
        raise DemoError(f"No {what}: upload an image or draw one.")
    if isinstance(image, (str, os.PathLike)):
        try:
            with PIL.Image.open(image) as opened:
                opened.load()
                image = opened.copy()
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
            name = os.path.basename(str(image))
            reason = one_line(err).replace(str(image), name)  # no server path in the page
            raise DemoError(f"Cannot read the {what} ({name}) as an image: {reason[:160]}") from None
    elif isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
                raise DemoError(f"The {what} is not an image: expected uint8 or float values.")
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
        try:
            image = PIL.Image.fromarray(array)
        except (TypeError, ValueError) as err:
            raise DemoError(f"The {what} is not an image ({one_line(err, 120)}).") from None
    elif not isinstance(image, PIL.Image.Image):
        raise DemoError(f"The {what} is not an image (got {type(image).__name__}).")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if image.width < 1 or image.height < 1:
        raise DemoError(f"The {what} is empty.")
    return image


def to_pil(images: torch.Tensor) -> List[PIL.Image.Image]:
    """`B x C x H x W` values in `[0, 1]` -> PIL images (`"L"` for one channel), rounded as the pipeline rounds."""
    array = (images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [PIL.Image.fromarray(a[..., 0], "L") if a.shape[-1] == 1 else PIL.Image.fromarray(a) for a in array]


def strip(images: Sequence[PIL.Image.Image]) -> PIL.Image.Image:
    """Images side by side, at their own resolution (no borders: each tile's pixels are the model's)."""
    out = PIL.Image.new(images[0].mode, (sum(i.width for i in images), max(i.height for i in images)))
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width
    return out


# ---- the tabs' functions -----------------------------------------------------------------------------------------


def sample(pipe, seed: int = 0, num_images: int = 1, temperature: float = 1.0,
           class_label: Optional[int] = None) -> List[PIL.Image.Image]:
    """
    `num_images` samples from the prior `N(0, t² I)`, `t = temperature`, drawn from `torch.Generator().manual_seed
    (seed)`: at `t = 1` exactly `pipe(batch_size=num_images, generator=...)` (the latents are those the pipeline
    draws, scaled by `t`).
    """
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    num_images = _check_int("number of images", num_images, 1, MAX_IMAGES)
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise DemoError(f"temperature must be a number from 0 to 10; got {temperature!r}.") from None
    if not 0 <= temperature <= 10:
        raise DemoError(f"temperature must be a number from 0 to 10; got {temperature!r}.")
    label = _class_label(pipe, class_label)
    latents = pipe(batch_size=num_images, generator=torch.Generator().manual_seed(seed), output_type="latent").images
    return pipe(latents=latents * temperature, class_labels=label).images


def reconstruct(pipe, image, class_label: Optional[int] = None):
    """
    `(input, reconstruction, error, mse)`: the image as the model sees it, `pipe.reconstruct` of it (the posterior
    mean decoded), the absolute error per pixel as an image (white = 1), and the mean squared error in `[0, 1]` units.
    """
    label = _class_label(pipe, class_label)
    image = load_image(image)
    pixels = pipe.preprocess(image)
    rec = pipe.reconstruct(image, class_labels=label, output_type="pt").images
    error = (pixels.float() - rec.float()).abs()
    return to_pil(pixels)[0], to_pil(rec)[0], to_pil(error)[0], float(error.pow(2).mean())


def interpolate(pipe, image_a=None, image_b=None, seed_a: int = 0, seed_b: int = 1, num_steps: int = 8,
                class_label: Optional[int] = None):
    """
    `(strip, frames)`: `pipe.interpolate` between two images, each an upload or, where none is given, the sample of
    its seed (`sample(pipe, seed)`); `frames` are the `num_steps` decoded points, endpoints included.
    """
    num_steps = _check_int("number of steps", num_steps, 2, MAX_STEPS)
    label = _class_label(pipe, class_label)
    ends = []
    for image, seed, name in ((image_a, seed_a, "first image"), (image_b, seed_b, "second image")):
        if image is None or (isinstance(image, dict) and image.get("composite") is None):
            ends.append(sample(pipe, seed, 1, 1.0, label)[0])
        else:
            ends.append(load_image(image, name))
    frames = pipe.interpolate(ends[0], ends[1], num_steps=num_steps, class_labels=label).images
    return strip(frames), frames


def score_image(pipe, image, class_label: Optional[int] = None, reference: Optional[dict] = None,
                num_samples: Optional[int] = None, seed: Optional[int] = None) -> dict:
    """
    The image's negative ELBO (nats) and bits per dimension from `pipe.score`, with the settings of the reference
    scores when given (their `num_samples` and `seed`), and its percentile among them: the share of reference
    images with a score at most this one's (100: less typical than every training image scored).
    """
    label = _class_label(pipe, class_label)
    reference = reference or {}
    num_samples = int(num_samples or reference.get("num_samples") or SCORE_SAMPLES)
    seed = int(seed if seed is not None else reference.get("seed", 0))
    out = pipe.score(load_image(image), num_samples=num_samples, generator=torch.Generator().manual_seed(seed),
                     class_labels=label)
    result = {"neg_elbo": float(out.neg_elbo[0]), "bits_per_dim": float(out.bits_per_dim[0]),
              "num_samples": num_samples, "percentile": None}
    ref = reference.get("neg_elbo")
    if ref:
        result["percentile"] = percentile(result["neg_elbo"], ref)
        result["reference_count"] = len(ref)
        result["reference_source"] = reference.get("source", "the training data")
    return result


def percentile(score: float, reference: Sequence[float]) -> float:
    """The percentage of `reference` scores at most `score`."""
    ref = np.asarray(reference, dtype=np.float64)
    return float(100.0 * np.count_nonzero(ref <= score) / len(ref))


def describe_score(result: dict) -> str:
    """The Score tab's Markdown for a `score_image` result."""
    lines = [f"**negative ELBO:** {result['neg_elbo']:.3f} nats  ",
             f"**bits per dimension:** {result['bits_per_dim']:.4f}  "]
    if result.get("percentile") is None:
        lines.append(NO_REFERENCE_MESSAGE)
    else:
        p = result["percentile"]
        verdict = ("typical of the training data" if p <= 95 else
                   "less typical than 95% of the training data: possibly out of distribution" if p < 100 else
                   "less typical than every training image scored: likely out of distribution")
        lines.append(f"**percentile among {result['reference_count']} training images ({result['reference_source']}):"
                     f"** {p:.1f} ({verdict}).")
    return "\n".join(lines)


NO_REFERENCE_MESSAGE = (
    "No reference scores of the training data are saved with this pipeline, so there is no in-distribution "
    "percentile. Save them with `asintrovae_hf.demo.save_reference_scores(pipe, images, folder)` (or "
    "`asintrovae-demo --pipeline FOLDER --save_reference_scores` for the built-in digits).")


# ---- reference scores --------------------------------------------------------------------------------------------


def save_reference_scores(pipe, images, folder, class_labels=None, num_samples: int = SCORE_SAMPLES, seed: int = 0,
                          source: str = "the training data", batch_size: int = 64) -> str:
    """
    Score `images` (the training data, or a sample of it) with `pipe.score` and write `reference_scores.json` into
    `folder` (the saved pipeline's folder: pushed with it, it reaches the Space too). Each image gets its own
    generator, `torch.Generator().manual_seed(seed)`, so that its score equals the Score tab's for the same image.
    Returns the file's path.
    """
    if len(images) == 0:
        raise DemoError("save_reference_scores needs at least one image.")
    pixels = pipe.preprocess(list(images) if not torch.is_tensor(images) else images)
    generators = [torch.Generator().manual_seed(seed) for _ in range(len(pixels))]
    out = pipe.score(pixels, num_samples=num_samples, generator=generators, class_labels=class_labels,
                     batch_size=batch_size)
    data = {"source": source, "count": len(pixels), "num_samples": num_samples, "seed": seed,
            "neg_elbo": [round(float(v), 6) for v in out.neg_elbo],
            "bits_per_dim": [round(float(v), 6) for v in out.bits_per_dim]}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, REFERENCE_SCORES_FILE)
    with open(path, "w") as f:
        json.dump(data, f)
        f.write("\n")
    return path


def load_reference_scores(pipe_or_source) -> Optional[dict]:
    """
    The reference scores saved with a pipeline: `reference_scores.json` in its folder, or in its Hub repo (the
    `_name_or_path` it was loaded from); `None` where there are none or they cannot be read.
    """
    source = pipe_or_source
    if not isinstance(source, (str, os.PathLike)):
        source = getattr(getattr(source, "config", None), "_name_or_path", None)
    if not source:
        return None
    source = str(source)
    path = os.path.join(source, REFERENCE_SCORES_FILE)
    if not os.path.isdir(source):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, REFERENCE_SCORES_FILE)
        except Exception:  # no such file, no such repo, offline, not a repo id: the tab says so
            return None
    try:
        data = read_json(path, max_bytes=4 * 1024 * 1024)
    except (OSError, ValueError):  # JsonFileError is a ValueError: the tab says the scores are missing
        return None
    scores = data.get("neg_elbo") if isinstance(data, dict) else None
    if not isinstance(scores, list) or not scores or not all(isinstance(v, (int, float)) for v in scores):
        return None
    return data


# ---- the Explore tab's basis -------------------------------------------------------------------------------------


@dataclass
class ExploreBasis:
    """Principal directions of posterior means: `mean` (Z), `components` (K x Z, unit rows), `scales` (K standard
    deviations along them), and `source`, what was encoded."""

    mean: torch.Tensor
    components: torch.Tensor
    scales: torch.Tensor
    source: str

    def latent(self, values: Sequence[float]) -> torch.Tensor:
        """`1 x Z`: the mean moved `values[k]` standard deviations along direction `k`."""
        weights = torch.zeros(len(self.components), dtype=self.mean.dtype)
        given = torch.as_tensor([float(v) for v in values][: len(self.components)], dtype=self.mean.dtype)
        weights[: len(given)] = given
        return (self.mean + (weights * self.scales) @ self.components)[None]


_BASES = weakref.WeakKeyDictionary()  # pipe -> ExploreBasis, so that each pipeline's basis is computed once


def _digits_fit(pipe) -> bool:
    if not pipe.is_image_model or pipe.encoder.config.in_channels != 1:
        return False
    return not pipe.num_classes or pipe.num_classes >= 10


def _builtin_digits():
    """The built-in digits (PIL images, labels), or `None` without the `[train]` extra."""
    try:
        from .data import load_digits_dataset

        data = load_digits_dataset()
    except ImportError:
        return None
    return list(data["image"]), list(data["label"])


def explore_basis(pipe, images=None, class_labels=None, source: Optional[str] = None, count: int = PRIOR_SAMPLES,
                  seed: int = 0) -> ExploreBasis:
    """
    The principal directions of the posterior means of `images` (with `class_labels` for a class-conditional
    model); without images, of the built-in digits where they fit the model (one channel; a class-conditional
    model with at least 10 classes), else of `count` images decoded from prior samples (seed `seed`, classes in
    turn). Cached per pipeline when computed from the default data.
    """
    cache = images is None
    if cache and pipe in _BASES:
        return _BASES[pipe]
    if images is None and _digits_fit(pipe):
        digits = _builtin_digits()
        if digits is not None:
            images, labels = digits
            class_labels = labels if pipe.num_classes else None
            source = "the built-in digits (1,797 images)"
    if images is None:
        labels = [i % pipe.num_classes for i in range(count)] if pipe.num_classes else None
        latents = pipe(batch_size=count, generator=torch.Generator().manual_seed(seed), output_type="latent").images
        images = pipe.decode(latents, output_type="pt", class_labels=labels).images
        class_labels = labels
        source = f"{count} images decoded from prior samples (no training data at hand)"
    means = pipe.encode(images, class_labels=class_labels).latent_dist.mean.detach().double().cpu()
    center = means.mean(0)
    _, singular, vt = torch.linalg.svd(means - center, full_matrices=False)
    k = min(MAX_SLIDERS, vt.shape[0])
    components = vt[:k]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))  # a fixed sign per direction
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    scales = singular[:k] / math.sqrt(max(len(means) - 1, 1))
    basis = ExploreBasis(center.float(), components.float(), scales.float(), source or "the given images")
    if cache:
        _BASES[pipe] = basis
    return basis


def explore(pipe, basis: ExploreBasis, values: Sequence[float], class_label: Optional[int] = None) -> PIL.Image.Image:
    """Decode the basis' mean moved `values` standard deviations along its principal directions."""
    label = _class_label(pipe, class_label)
    for v in values:
        if v is None or not math.isfinite(float(v)) or abs(float(v)) > 10:
            raise DemoError(f"Explore sliders take values from -10 to 10; got {v!r}.")
    latent = basis.latent(values).to(dtype=pipe.decoder.dtype)
    return pipe.decode(latent, class_labels=label).images[0]


# ---- the Gradio app ----------------------------------------------------------------------------------------------

# Small images are enlarged to their box by the browser, and stay crisp.
STYLE = ("<style>img { image-rendering: pixelated; } "
         ".demo-image img { width: 100% !important; height: 100% !important; object-fit: contain !important; }</style>")


def _upload_component(**kwargs):
    """A `gr.Image` upload whose unreadable files give a one-line `gr.Error`: Gradio's own preprocessing opens the file
    and fails with a bare exception, which the page shows as "Error" alone. (Wrapped on the instance: a subclass of
    a Gradio component makes Gradio write a `.pyi` stub next to this module.)"""
    import gradio as gr

    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
            name = getattr(payload, "orig_name", None) or "the upload"
            reason = one_line(err).replace(str(getattr(payload, "path", None)), name)  # no server path in the page
            raise gr.Error(f"Cannot read {name} as an image: {reason[:160]}", print_exception=False) from None

    component.preprocess = checked
    return component


def _expected(fn):
    """Run a tab's function; the package's expected errors become `gr.Error(one line)` (no traceback in the page)."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except (ValueError, TypeError, OSError) as err:  # DemoError is a ValueError; the pipeline raises these
            raise gr.Error(one_line(err, 300), print_exception=False) from None

    return wrapper


def build_demo(pipe, reference_scores: Optional[dict] = None, explore_images=None, explore_labels=None,
               title: Optional[str] = None):
    r"""
    The Gradio app of `pipe` (any image `AsIntroVAEPipeline`, unconditional or class-conditional): tabs Sample,
    Reconstruct, Interpolate, Score and Explore.

    Args:
        pipe (`AsIntroVAEPipeline`): The pipeline.
        reference_scores (`dict`, *optional*): Scores of the training data (as `save_reference_scores` writes them);
            by default `reference_scores.json` saved with the pipeline, if any.
        explore_images, explore_labels (*optional*): The images (and classes) whose posterior means give the Explore
            tab's directions; by default the built-in digits or decoded prior samples (see `explore_basis`).
        title (`str`, *optional*): The page's heading; defaults to the pipeline's name.

    Returns:
        `gradio.Blocks`: launch it with `.launch()`.
    """
    from .errors import require

    require("gradio", purpose="The demo", extra="demo")
    import gradio as gr

    if not pipe.is_image_model:
        raise DemoError("The demo shows image models; this pipeline holds vector models.")
    name = title or os.path.basename(os.path.normpath(str(getattr(pipe.config, "_name_or_path", "") or ""))) or \
        "AS-IntroVAE"
    reference = reference_scores if reference_scores is not None else load_reference_scores(pipe)
    basis = explore_basis(pipe, explore_images, explore_labels)
    num_classes = pipe.num_classes
    mode = "L" if pipe.decoder.config.out_channels == 1 else "RGB"
    size = pipe.decoder.config.sample_size

    def class_picker(tab):
        return gr.Dropdown(choices=list(range(num_classes or 1)), value=0, label="class", visible=bool(num_classes),
                           interactive=True, elem_id=f"{tab}-class")

    def upload(label, elem_id):
        return _upload_component(label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 format="png", height=192, elem_id=elem_id, elem_classes="demo-image")

    def shown(label, elem_id):
        return gr.Image(label=label, type="pil", format="png", interactive=False, height=192, elem_id=elem_id,
                        elem_classes="demo-image")

    with gr.Blocks(title=f"{name} · asintrovae-hf", analytics_enabled=False) as demo:
        gr.Markdown(f"# {name}\n{'Class-conditional ' if num_classes else ''}introspective VAE "
                    f"({mode}, {size}x{size}, latent dimension {pipe.latent_dim}"
                    f"{f', {num_classes} classes' if num_classes else ''}) from "
                    f"[asintrovae-hf](https://arxiv.org/abs/2206.13903).")
        gr.HTML(STYLE, padding=False)
        with gr.Tab("Sample", id="sample"):
            gr.Markdown(TAB_DESCRIPTIONS["sample"])
            with gr.Row():
                s_seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="sample-seed")
                s_count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="number of images", elem_id="sample-count")
                s_temp = gr.Slider(0, 2, value=1.0, step=0.05, label="temperature t", elem_id="sample-temperature")
                s_class = class_picker("sample")
            s_button = gr.Button("Sample", variant="primary", elem_id="sample-button")
            s_out = gr.Gallery(label="samples", format="png", columns=8, height=320, elem_id="sample-gallery",
                               type="pil", object_fit="contain")
            s_button.click(_expected(lambda *a: sample(pipe, *a)), [s_seed, s_count, s_temp, s_class], s_out,
                           api_name="sample")

        with gr.Tab("Reconstruct", id="reconstruct"):
            gr.Markdown(TAB_DESCRIPTIONS["reconstruct"])
            with gr.Row():
                r_upload = upload("upload an image", "reconstruct-upload")
                r_draw = gr.Sketchpad(value=PIL.Image.new("RGB", (192, 192)), label="or draw one (white on black)",
                                      type="pil", image_mode="RGBA", canvas_size=(192, 192),
                                      brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", default_size=14),
                                      elem_id="reconstruct-sketch")
                r_class = class_picker("reconstruct")
            r_button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
            with gr.Row():
                r_in = shown("input (as the model sees it)", "reconstruct-input")
                r_rec = shown("reconstruction", "reconstruct-output")
                r_err = shown("absolute error", "reconstruct-error")
            r_mse = gr.Number(label="mean squared error (values in [0, 1])", interactive=False, precision=6,
                              elem_id="reconstruct-mse")

            def run_reconstruct(uploaded, drawn, label):
                image = uploaded if uploaded else drawn
                return reconstruct(pipe, image, label)

            r_button.click(_expected(run_reconstruct), [r_upload, r_draw, r_class], [r_in, r_rec, r_err, r_mse],
                           api_name="reconstruct")

        with gr.Tab("Interpolate", id="interpolate"):
            gr.Markdown(TAB_DESCRIPTIONS["interpolate"])
            with gr.Row():
                i_a = upload("first image (empty: the sample of seed A)", "interpolate-a")
                i_b = upload("second image (empty: the sample of seed B)", "interpolate-b")
            with gr.Row():
                i_seed_a = gr.Number(value=0, precision=0, minimum=0, label="seed A")
                i_seed_b = gr.Number(value=1, precision=0, minimum=0, label="seed B")
                i_steps = gr.Slider(2, MAX_STEPS, value=8, step=1, label="steps")
                i_class = class_picker("interpolate")
            i_button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
            i_out = gr.Image(label="the walk", type="pil", format="png", interactive=False, height=160,
                             elem_id="interpolate-strip", elem_classes="demo-image")
            i_button.click(_expected(lambda *a: interpolate(pipe, *a)[0]),
                           [i_a, i_b, i_seed_a, i_seed_b, i_steps, i_class], i_out, api_name="interpolate")

        with gr.Tab("Score", id="score"):
            gr.Markdown(TAB_DESCRIPTIONS["score"])
            if not reference:
                gr.Markdown(NO_REFERENCE_MESSAGE, elem_id="score-no-reference")
            with gr.Row():
                c_upload = upload("upload an image", "score-upload")
                c_class = class_picker("score")
            c_button = gr.Button("Score", variant="primary", elem_id="score-button")
            c_out = gr.Markdown(elem_id="score-result")
            c_button.click(_expected(lambda image, label: describe_score(score_image(pipe, image, label, reference))),
                           [c_upload, c_class], c_out, api_name="score")

        with gr.Tab("Explore", id="explore"):
            gr.Markdown(TAB_DESCRIPTIONS["explore"].format(source=basis.source))
            with gr.Row():
                with gr.Column():
                    sliders = [gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0.0, step=0.1,
                                         label=f"direction {k + 1} (std {float(basis.scales[k]):.3g})",
                                         elem_id=f"explore-slider-{k + 1}")
                               for k in range(len(basis.components))]
                    e_class = class_picker("explore")
                e_out = gr.Image(label="decoded", type="pil", format="png", interactive=False, height=320,
                                 elem_id="explore-image", elem_classes="demo-image",
                                 value=explore(pipe, basis, [0.0] * len(sliders), 0 if num_classes else None))
            run_explore = _expected(lambda label, *values: explore(pipe, basis, values, label))
            for control in [*sliders, e_class]:
                control.change(run_explore, [e_class, *sliders], e_out, api_name=False, show_progress="hidden")
            gr.Button("decode", visible=False).click(run_explore, [e_class, *sliders], e_out, api_name="explore")
    return demo
