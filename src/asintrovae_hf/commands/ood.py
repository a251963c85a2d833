"""Out-of-distribution detection with a trained pipeline: the AUROC of its ELBO scores, built-in digits against
shifted sets made offline (noise, inverted digits, letters drawn with PIL, blank images).

    asintrovae-ood --pipeline as-introvae-digits --num_samples 8 --output ood.json

Prints a markdown table (per set: AUROC of the negative ELBO and of the importance-weighted bound, mean scores) and
writes the numbers as JSON. See `asintrovae_hf.evaluation.ood`.
"""

import argparse
import json
import sys


from asintrovae_hf import AsIntroVAEPipeline


from asintrovae_hf.zoo import resolve_pipeline
from asintrovae_hf.evaluation.ood import OOD_SETS, evaluate_ood
from asintrovae_hf.process_settings import torch_threads


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="asintrovae-ood", description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True,
                   help="A saved pipeline: a folder, a Hub id, or a shipped "
                        "pipeline's name (asintrovae_hf.zoo, e.g. as-introvae-mnist-5k).")
    p.add_argument("--sets", nargs="+", default=list(OOD_SETS), choices=OOD_SETS)
    p.add_argument("--count", type=int, default=1000, help="Images per out-of-distribution set.")
    p.add_argument("--num_samples", type=int, default=8, help="Posterior samples per image.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=str, default=None, help="Write the results as JSON here.")
    args = p.parse_args(argv)
    if args.count < 1 or args.num_samples < 1:
        p.error("--count and --num_samples must be positive")
    return args


def markdown(results) -> str:
    rows = ["| set | images | AUROC (neg. ELBO) | AUROC (IW bound) | mean neg. ELBO | mean IW bound |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['count']} | {r.get('auroc_elbo', float('nan')):.3f} | "
                    f"{r.get('auroc_iw', float('nan')):.3f} | {r['mean_neg_elbo']:.1f} | {r['mean_neg_iw']:.1f} |")
    return "\n".join(rows).replace("| nan | nan |", "| (in distribution) | |")


def main(argv=None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args) -> int:
    try:
        pipe = AsIntroVAEPipeline.from_pretrained(resolve_pipeline(args.pipeline))
    except (OSError, ValueError) as err:
        print(f"error: cannot load the pipeline {args.pipeline!r}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    pipe.set_progress_bar_config(disable=True)
    results = evaluate_ood(pipe, args.sets, args.count, args.num_samples, args.seed)
    print(markdown(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"pipeline": args.pipeline, "num_samples": args.num_samples, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
