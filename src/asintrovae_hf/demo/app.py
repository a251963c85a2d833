"""The Gradio wiring: `build_demo(pipe)` passes values to the plain functions and shows errors as one line.

Gradio is imported only inside these functions, so `import asintrovae_hf.demo` stays light."""

import os
from typing import Optional

import PIL.Image

from ..errors import one_line
from .explore import explore, explore_basis
from .inputs import MAX_IMAGES, MAX_STEPS, SLIDER_RANGE, TAB_DESCRIPTIONS, DemoError
from .reference_scores import load_reference_scores
from .tabs import NO_REFERENCE_MESSAGE, describe_score, interpolate, reconstruct, sample, score_image


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
    from ..errors import require

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
