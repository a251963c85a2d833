#!/usr/bin/env python
"""Sampling from a fitted latent density against sampling from the prior, for the shipped (zoo) pipelines.

For each shipped pipeline, a Gaussian mixture (`GaussianMixtureLatentPrior`, diagonal covariances) is fitted to the
posterior means of its dataset's train split, for each number of components of `--components`; the held-out metrics
(`evaluate_heldout`, seed 0) are measured with latents from the prior `N(0, I)`, from each mixture, and, as a
reference, from the train split's posterior means themselves (`train-means`). One JSON line per (pipeline, sampler)
is appended to OUTPUT_DIR/runs.jsonl (a record already there is skipped, so the script resumes), and
OUTPUT_DIR/results.md is rewritten from all of them.

    python scripts/latent_sampler_benchmark.py                      # every shipped pipeline, K = 1, 10, 20
    python scripts/latent_sampler_benchmark.py --pipelines soft-introvae-digits --components 10
    python scripts/latent_sampler_benchmark.py --summarize          # results.md from runs.jsonl only

The shipped folders are read, never written; the fitted mixtures are not saved (fit one and save it with
`pipe.latent_prior = fit_latent_prior(...); pipe.save_pretrained(...)`).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch

from asintrovae_hf.experiments.provenance import code_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("fd", "precision", "recall", "class_entropy", "smallest_class_share")


def parse_args(argv=None):
    from asintrovae_hf.zoo import zoo_names

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipelines", nargs="+", default=zoo_names(),
                   help="Shipped pipeline names, or folders of pipelines in the zoo's layout (with zoo_entry.json; "
                        "the folder's name names it in the records). Default: every shipped pipeline.")
    p.add_argument("--components", nargs="+", type=int, default=[1, 10, 20])
    p.add_argument("--covariance_type", choices=("diag", "full"), default="diag")
    p.add_argument("--seed", type=int, default=0, help="Seeds the held-out samples and the mixture's k-means.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output_dir", default=os.path.join(ROOT, "results", "latent_sampler"))
    p.add_argument("--summarize", action="store_true", help="Only rewrite results.md from runs.jsonl.")
    return p.parse_args(argv)


def read_records(path):
    from asintrovae_hf.json_io import read_json_lines

    return [record for _, record in read_json_lines(path)] if os.path.isfile(path) else []


class TrainPosteriorMeans:
    """The reference the mixtures tend to as K grows and the variances shrink: latents drawn (with replacement) from
    the train split's posterior means themselves, i.e. reconstructions of random training images."""

    def __init__(self, means):
        self.means = means

    def sample(self, num_samples, generator=None):
        return self.means[torch.randint(len(self.means), (num_samples,), generator=generator)]


def sampler_name(k, covariance_type):
    return f"gmm-{covariance_type}-k{k}"


def summarize(records):
    lines = ["# A fitted latent sampler against the prior", "",
             "Held-out metrics (`evaluate_heldout`, seed 0: the mean of 3 draws of as many samples as held-out "
             "images) of each shipped pipeline, with latents from the prior `N(0, I)` and from a Gaussian mixture "
             "with diagonal covariances fitted to the posterior means of the train split (K components). fd: lower is "
             "better; the others higher. `latent log p`: the mean log-density of the held-out split's posterior "
             "means under the sampler (nats; higher = the sampler covers where the encoder puts held-out images).",
             "", "| pipeline | sampler | fd | precision | recall | class entropy | smallest class share | "
             "latent log p |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {}
    for r in records:
        order.setdefault(r["pipeline"], []).append(r)
    for name, rs in order.items():
        rank = lambda r: (r["sampler"] == "train-means", r["num_components"] or 0)  # noqa: E731
        for r in sorted(rs, key=rank):
            m, log_p = r["metrics"], r["heldout_latent_log_prob"]
            cells = [f"{m['fd']:.2f} ± {m['fd_draw_std']:.2f}", f"{m['precision']:.3f}", f"{m['recall']:.3f}",
                     f"{m['class_entropy']:.3f}", f"{m['smallest_class_share']:.4f}",
                     "" if log_p is None else f"{log_p:.2f}"]
            lines.append(f"| {name} | {r['sampler']} | " + " | ".join(cells) + " |")
    lines += ["", "`train-means`: a reference, not a sampler to ship: latents drawn from the train split's posterior "
              "means themselves (reconstructions of random training images), what the mixtures tend to as K grows.",
              "", "± is the sample standard deviation (ddof 1) of the 3 draws (the estimator's own noise), not a "
              "spread over seeds: each pipeline is one trained model (seed 0 of its method).", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    runs = os.path.join(args.output_dir, "runs.jsonl")
    if not args.summarize:
        torch.set_num_threads(args.threads)
        from asintrovae_hf import AsIntroVAEPipeline
        from asintrovae_hf.evaluation.heldout import evaluate_heldout, split_images
        from asintrovae_hf.models.latent_prior import GaussianMixtureLatentPrior, encode_means, fit_latent_prior
        from asintrovae_hf.json_io import read_json
        from asintrovae_hf.zoo import ENTRY_FILE, zoo_path

        done = {(r["pipeline"], r["sampler"]) for r in read_records(runs)}
        for name in args.pipelines:
            folder = name if os.path.isdir(name) else zoo_path(name)
            name = os.path.basename(os.path.normpath(folder))
            dataset = read_json(os.path.join(folder, ENTRY_FILE), expect=dict)["dataset"]
            pipe = AsIntroVAEPipeline.from_pretrained(folder)
            pipe.set_progress_bar_config(disable=True)
            resolution = pipe.encoder.config.sample_size
            train, _ = split_images(dataset, "train", resolution)
            heldout, _ = split_images(dataset, "test", resolution)
            heldout_means = encode_means(pipe, heldout)
            standard = GaussianMixtureLatentPrior(latent_dim=pipe.latent_dim, num_components=1)  # N(0, I)
            for k in [None] + list(args.components) + ["train-means"]:
                sampler = "prior" if k is None else k if k == "train-means" else sampler_name(k, args.covariance_type)
                if (name, sampler) in done:
                    print(f"{name} {sampler}: already in {runs}", flush=True)
                    continue
                start = time.time()
                if k == "train-means":
                    prior = TrainPosteriorMeans(encode_means(pipe, train))
                else:
                    prior = None if k is None else fit_latent_prior(pipe, train, num_components=k, seed=args.seed,
                                                                    covariance_type=args.covariance_type)
                fit_seconds = time.time() - start
                start = time.time()
                metrics = evaluate_heldout(pipe, dataset, seed=args.seed, sampler=prior)
                mixture = isinstance(k, int)
                record = {"pipeline": name, "dataset": dataset, "sampler": sampler,
                          "num_components": k if mixture else None,
                          "covariance_type": args.covariance_type if mixture else None,
                          "num_train": len(train), "fit_seconds": round(fit_seconds, 2),
                          "evaluate_seconds": round(time.time() - start, 2),
                          "heldout_latent_log_prob": None if k == "train-means" else
                          float((prior or standard).log_prob(heldout_means).mean()),
                          "metrics": metrics, "code_version": code_version(), "threads": args.threads,
                          "device": platform.processor() or platform.machine(),
                          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                with open(runs, "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"{name} {sampler}: fd {metrics['fd']:.2f} precision {metrics['precision']:.3f} recall "
                      f"{metrics['recall']:.3f} entropy {metrics['class_entropy']:.3f} smallest "
                      f"{metrics['smallest_class_share']:.4f} ({record['evaluate_seconds']} s)", flush=True)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(summarize(read_records(runs)))


if __name__ == "__main__":
    sys.exit(main())
