"""A Gradio demo for any `AsIntroVAEPipeline`: sample, reconstruct, interpolate, score and explore the latent space.

`build_demo(pipe)` returns a `gradio.Blocks` (`pip install "asintrovae-hf[demo]"`); `asintrovae-demo` serves it and
`asintrovae-push-space` puts it on a Hugging Face Space. The work is done by plain functions (`tabs`, `reference_scores`,
`explore`), which take and return PIL images, strings and numbers (the tests call them without a browser); the Gradio
wiring (`app.build_demo`) only passes values through and turns the package's expected errors into `gr.Error` one-liners.

Gradio is imported only inside `build_demo`: `import asintrovae_hf` (and this package) stays light.

Score tab: the percentile of an image's negative ELBO among the scores of the training data's images, saved next to
the pipeline by `save_reference_scores` as `reference_scores.json` (see there). Explore tab: principal directions of
the posterior means of a data set, computed once per pipeline (`explore_basis`): the images given to `build_demo`,
else the built-in digits when the model takes one-channel images (and, for a class-conditional model, has at least
their 10 classes) and the `[train]` extra is installed, else images decoded from prior samples.
"""

from .app import build_demo
from .explore import ExploreBasis, explore, explore_basis
from .inputs import (MAX_IMAGES, MAX_SLIDERS, MAX_STEPS, PRIOR_SAMPLES, REFERENCE_SCORES_FILE, SCORE_SAMPLES,
                     SLIDER_RANGE, TAB_DESCRIPTIONS, DemoError, load_image, strip, to_pil)
from .reference_scores import load_reference_scores, save_reference_scores
from .tabs import NO_REFERENCE_MESSAGE, describe_score, interpolate, percentile, reconstruct, sample, score_image

__all__ = ["MAX_IMAGES", "MAX_SLIDERS", "MAX_STEPS", "NO_REFERENCE_MESSAGE", "PRIOR_SAMPLES", "REFERENCE_SCORES_FILE",
           "SCORE_SAMPLES", "SLIDER_RANGE", "TAB_DESCRIPTIONS", "DemoError", "ExploreBasis", "build_demo",
           "describe_score", "explore", "explore_basis", "interpolate", "load_image", "load_reference_scores",
           "percentile", "reconstruct", "sample", "save_reference_scores", "score_image", "strip", "to_pil"]
