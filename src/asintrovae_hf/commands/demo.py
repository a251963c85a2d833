"""Serve the Gradio demo of a saved pipeline (a folder or a Hub id) on 127.0.0.1.

    asintrovae-demo --pipeline as-introvae-digits             # a free port; the URL is printed
    asintrovae-demo --pipeline you/as-introvae-digits --port 7860
    asintrovae-demo --pipeline as-introvae-digits --save_reference_scores   # score the built-in digits first

Needs the `[demo]` extra (`pip install "asintrovae-hf[demo]"`). Nothing is shared on the internet unless `--share`
is given. Gradio's analytics (and its version check) are off unless GRADIO_ANALYTICS_ENABLED is set.
"""

import argparse
import os
import socket
import sys


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asintrovae-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True,
                        help="A folder written by save_pretrained, a Hub repo id, or a shipped "
                             "pipeline's name (asintrovae_hf.zoo, e.g. as-introvae-mnist-5k).")
    parser.add_argument("--host", default="127.0.0.1", help="The address to serve on (default: 127.0.0.1 only).")
    parser.add_argument("--port", type=int, default=None, help="The port (default: a free one).")
    parser.add_argument("--share", action="store_true", help="Also make a public gradio.live link (off by default).")
    parser.add_argument("--save_reference_scores", action="store_true",
                        help="Score the built-in digits and save them as reference_scores.json in the pipeline's "
                             "folder (a local folder only) before serving: the Score tab's in-distribution percentile.")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace):
    """Load the pipeline, save its reference scores if asked, and build the demo; exits with a one-line error."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from asintrovae_hf import AsIntroVAEPipeline
    from asintrovae_hf.zoo import resolve_pipeline
    from asintrovae_hf.demo import build_demo, save_reference_scores
    from asintrovae_hf.errors import one_line

    if args.save_reference_scores and not os.path.isdir(args.pipeline):
        sys.exit("error: --save_reference_scores writes into the pipeline's folder; give a local folder.")
    try:
        pipe = AsIntroVAEPipeline.from_pretrained(resolve_pipeline(args.pipeline))
    except (OSError, ValueError) as err:
        sys.exit(f"error: cannot load the pipeline {args.pipeline!r}: {one_line(err, 300)}")
    if args.save_reference_scores:
        from asintrovae_hf.data import load_digits_dataset

        digits = load_digits_dataset()
        labels = list(digits["label"]) if pipe.num_classes else None
        path = save_reference_scores(pipe, list(digits["image"]), args.pipeline, class_labels=labels,
                                     source="the built-in digits")
        print(f"saved the reference scores of {len(digits)} digits to {path}", flush=True)
    try:
        return build_demo(pipe)
    except (ImportError, ValueError) as err:
        sys.exit(f"error: {one_line(err, 300)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    demo = prepare(args)
    port = args.port or free_port(args.host)
    print(f"serving the demo of {args.pipeline} on http://{args.host}:{port}", flush=True)
    demo.launch(server_name=args.host, server_port=port, share=args.share, show_error=False, inbrowser=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
