r"""The 2D toy benchmark: VAE, IntroVAE, Soft-IntroVAE and AS-IntroVAE on 8 Gaussians, 2 spirals, checkerboard, rings.

    # the paper's table: the official 2D loop (30,000 iterations, 2,000 plain-VAE, lr x0.1 at 10k and 15k), 3 seeds
    asintrovae-toy2d --dataset 8gaussians --seeds 0 1 2 \
        --methods vae introvae soft-introvae as-introvae:reference as-introvae:recommended --output_dir results/toy2d
    # a robustness grid: every combination of the listed values, per method
    asintrovae-toy2d --methods soft-introvae as-introvae --seeds 0 --num_iter 10000 \
        --grid beta_kl=0.1,0.3,0.9 --grid beta_neg=0.3,0.9,2.7 --output_dir results/toy2d-grid
    # on a GPU (the data and noise are still drawn on the CPU, so only the arithmetic differs from a CPU run)
    asintrovae-toy2d --dataset 8gaussians --seeds 0 --methods as-introvae --device cuda --output_dir results/gpu

A method is `objective[:preset]` (presets: `reference`, `recommended`). Objective flags (`--beta_neg`, `--squash`,
...) override the per-dataset reference values for every method. Each finished run is appended as one JSON line to
`OUTPUT_DIR/runs.jsonl`; running the same command again skips the runs already there, so an interrupted batch
resumes where it stopped, and a run killed midway continues from its last checkpoint (every 1,000 iterations, in
`OUTPUT_DIR/models/<run id>/`). The script writes `results.md` (mean ± sample std over seeds), one figure per
dataset (per method, its median seed by KL and, from three seeds on, its worst: generated points above the model
density `exp(-negative ELBO)`), and for
grids `grid.md` and a heat map per dataset. Two methods' seeds are compared, with the estimators' own noise measured
on the kept networks, by

    asintrovae-toy2d --summarize --output_dir results/toy10 --compare as-introvae soft-introvae:reference \
        --eval_seeds 1234 1 2 3 4

(`comparison.md`, `comparison.json`; see `asintrovae_hf.experiments.toy.seed_study`); `--compare_seeds 1 2 ...
--comparison_name NAME` repeats it on a subset of the training seeds into `NAME.md` and `NAME.json`. The estimators
are documented in `asintrovae_hf.experiments.toy.metrics`.
"""

import argparse
import itertools
import json
import os
import sys

import torch
from tqdm.auto import tqdm

from asintrovae_hf.objectives.config import PRESETS, ObjectiveConfig
from asintrovae_hf.objectives.registry import objective_names
from asintrovae_hf.experiments.images.robustness_grid import parse_grid_option
from asintrovae_hf.process_settings import torch_threads
from asintrovae_hf.experiments.toy import TOY_DATASETS, toy_objective_defaults
from asintrovae_hf.experiments.toy.comparison import (
    ToyRun,
    method_order,
    append_record,
    grid_table,
    load_run_models,
    markdown_table,
    read_records,
    record_key,
    run_toy,
    save_figure,
    save_grid_heatmap,
)
from asintrovae_hf.experiments.figures import median_seed, worst_seed
from asintrovae_hf.experiments.toy.seed_study import evaluate_with_seeds, seed_study, study_markdown
from asintrovae_hf.experiments.toy.hparams import BATCH_SIZE, HIDDEN_DIMS, LEARNING_RATE, LR_GAMMA, NUM_ITER


def _method(text: str):
    objective, _, preset = text.partition(":")
    objectives = objective_names()
    if objective not in objectives or (preset and preset not in PRESETS):
        raise argparse.ArgumentTypeError(f"expected objective[:preset] with objective in {', '.join(objectives)} "
                                         f"and preset in {', '.join(PRESETS)}; got {text!r}")
    return objective, preset or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asintrovae-toy2d", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["8gaussians"], choices=TOY_DATASETS)
    p.add_argument("--methods", nargs="+", type=_method, default=[(m, None) for m in objective_names()],
                   help="objective[:preset], e.g. vae soft-introvae as-introvae:reference as-introvae:recommended")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--num_iter", type=int, default=NUM_ITER)
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    p.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    p.add_argument("--lr_milestones", nargs="*", type=int, default=None,
                   help="Iterations at which both learning rates are multiplied by --lr_gamma. Default: the official "
                        "10000 15000 at 30,000 iterations, the same fractions of other budgets; none: no decay.")
    p.add_argument("--lr_gamma", type=float, default=LR_GAMMA)
    p.add_argument("--hidden_dims", nargs="+", type=int, default=list(HIDDEN_DIMS),
                   help="Widths of the hidden ReLU layers of both MLPs (default: 256 256 256 256, the official "
                        "networks; runs recorded before this option used 256 256 256).")
    p.add_argument("--label", type=str, default=None, help="A name for these settings in the tables.")
    p.add_argument("--grid", action="append", type=parse_grid_option, default=[], metavar="OPTION=V1,V2,...",
                   help="Run every combination of the listed values (repeat for several options).")
    p.add_argument("--output_dir", type=str, default="results/toy2d")
    p.add_argument("--model_dir", type=str, default=None,
                   help="Where the trained networks and the checkpoints of unfinished runs go (default: "
                        "OUTPUT_DIR/models).")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine).")
    p.add_argument("--device", type=str, default="cpu",
                   help="Where the networks train, e.g. cuda or cuda:1 (default: cpu). The random draws are the same "
                        "on every device, so only the arithmetic differs; each record lists its devices.")
    p.add_argument("--gnelbo_grid", type=int, default=1024, help="Grid size of the grid-normalized ELBO.")
    p.add_argument("--eval_seed", type=int, default=1234)
    p.add_argument("--compare", nargs=2, type=_method, default=None, metavar="METHOD",
                   help="With --summarize: compare two methods over their seeds (e.g. as-introvae "
                        "soft-introvae:reference), each kept model scored at every --eval_seeds; writes "
                        "comparison.md, comparison.json and evaluations.jsonl.")
    p.add_argument("--eval_seeds", nargs="+", type=int, default=None,
                   help="The evaluation seeds of --compare (default: --eval_seed alone).")
    p.add_argument("--compare_seeds", nargs="+", type=int, default=None,
                   help="With --compare: only these training seeds (default: every finished one), e.g. to leave out "
                        "a seed that helped choose a setting.")
    p.add_argument("--comparison_name", type=str, default="comparison",
                   help="With --compare: the tables' file name, without extension (default: comparison).")
    p.add_argument("--summarize", nargs="*", default=None, metavar="RUNS_JSONL",
                   help="Only rebuild the tables and figures in --output_dir from runs.jsonl files (default: the one "
                        "in --output_dir).")
    objective = p.add_argument_group("objective (default: the per-dataset values of the official 2D code)")
    per_dataset = {name: "per dataset" for name in ("beta_rec", "beta_kl", "beta_neg")}
    ObjectiveConfig.add_arguments(objective, exclude=("objective",),
                                  defaults={**per_dataset, "margin": 2.0, "num_vae_steps": 2000})
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("num_iter", "batch_size", "threads", "gnelbo_grid"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if any(d <= 0 for d in args.hidden_dims):
        parser.error(f"--hidden_dims must be positive widths, got {args.hidden_dims}")
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device must name a torch device such as cpu or cuda, got {args.device!r} ({error})")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} needs a GPU that this torch ({torch.__version__}) can use; it sees none.")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or a cuda device, got {args.device!r}")
    if (args.compare_seeds is not None or args.comparison_name != "comparison") and args.compare is None:
        parser.error("--compare_seeds and --comparison_name go with --compare METHOD METHOD, which was not given.")
    if not args.comparison_name or os.path.basename(args.comparison_name) != args.comparison_name \
            or args.comparison_name.startswith("."):
        parser.error(f"--comparison_name must be a plain file name without a folder, got {args.comparison_name!r}")
    if args.model_dir is None:
        args.model_dir = os.path.join(args.output_dir, "models")
    return args


def plan_runs(args: argparse.Namespace):
    """Every run the options describe, in order."""
    grid_names = [name for name, _ in args.grid]
    combos = list(itertools.product(*[values for _, values in args.grid])) or [()]
    runs = []
    for dataset in args.dataset:
        for objective, preset in args.methods:
            name = objective + (f" ({preset})" if preset else "") + (f" [{args.label}]" if args.label else "")
            for combo in combos:
                overrides = dict(zip(grid_names, combo))
                defaults = toy_objective_defaults(dataset, objective)
                namespace = argparse.Namespace(**{**vars(args), "objective": objective,
                                                  "preset": preset or args.preset, **overrides})
                config = ObjectiveConfig.from_namespace(namespace, defaults=defaults)
                for seed in args.seeds:
                    runs.append(ToyRun(dataset=dataset, name=name, config=config, seed=seed, num_iter=args.num_iter,
                                       batch_size=args.batch_size, learning_rate=args.learning_rate,
                                       lr_milestones=args.lr_milestones, lr_gamma=args.lr_gamma,
                                       hidden_dims=tuple(args.hidden_dims), overrides=overrides, eval_seed=args.eval_seed, gnelbo_grid=args.gnelbo_grid))
    return runs


def figure_runs(runs):
    """
    The runs a dataset's figure shows, as `(method, role, run, seeds of the method)`: per method its median seed by
    KL and, from three seeds on, its worst one too (a method whose seeds split is then seen at both ends).
    """
    kept = [r for r in runs if "run_id" in r]
    kl = lambda r, metric: r[metric]  # noqa: E731
    medians, worst = median_seed(kept, "kl", value=kl), worst_seed(kept, "kl", value=kl)
    chosen = []
    for name in sorted(medians, key=method_order):
        count = sum(r["name"] == name for r in runs)
        chosen.append((name, "median", medians[name], count))
        if count >= 3 and worst[name] is not medians[name]:
            chosen.append((name, "worst", worst[name], count))
    return chosen


def summarize(records, output_dir: str, eval_seed: int = 1234, model_dir: str = None) -> None:
    """
    Write `results.md`, `grid.md`, and per dataset a figure of each method's median run by KL (the lower of the two
    middle runs for an even count of seeds) and, from three seeds on, its worst run, where their networks were kept.
    """
    iters = sorted({r["num_iter"] for r in records})
    table = markdown_table(records)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"Toy 2D benchmark, {', '.join(map(str, iters))} iterations per run.\n\n" + table)
    print(table, file=sys.stderr)
    grid = grid_table(records)
    if grid:
        with open(os.path.join(output_dir, "grid.md"), "w") as f:
            f.write(grid)
        print(grid, file=sys.stderr)
    model_dir = model_dir or os.path.join(output_dir, "models")
    for dataset in sorted({r["dataset"] for r in records}):
        panels = {}
        runs = [r for r in records if r["dataset"] == dataset and not r.get("overrides")]
        for name, role, chosen, count in figure_runs(runs):
            models = load_run_models(model_dir, chosen["run_id"])
            if models is None:
                print(f"{dataset}, {name}: the networks of its {role} run were not kept; no panel.", file=sys.stderr)
                continue
            label = f"seed {chosen['seed']}, {role} KL of {count}" if count > 1 else f"seed {chosen['seed']}"
            print(f"{dataset} figure: {name}, {label}", file=sys.stderr)
            panels[f"{name}\n{label}"] = models
        if panels:
            save_figure(dataset, panels, os.path.join(output_dir, f"{dataset}.png"), eval_seed)
        save_grid_heatmap(records, dataset, os.path.join(output_dir, f"grid_{dataset}.png"))


def _row_name(objective: str, preset) -> str:
    return objective + (f" ({preset})" if preset else "")


def compare(records, args: argparse.Namespace, names) -> dict:
    """Score the kept models of `names` (at `--compare_seeds`, or all) at every evaluation seed and write the seed
    study (`<comparison_name>.md/.json`)."""
    eval_seeds = args.eval_seeds or [args.eval_seed]
    chosen = [r for r in records if r.get("name", r["method"]) in names and not r.get("overrides")
              and (args.compare_seeds is None or r["seed"] in args.compare_seeds)]
    missing = [n for n in names if not any(r.get("name", r["method"]) == n for r in chosen)]
    if missing:
        seeds = "" if args.compare_seeds is None else f" at --compare_seeds {args.compare_seeds}"
        raise SystemExit(f"--compare: no finished runs of {missing}{seeds} in the records; they have "
                         f"{sorted({r.get('name', r['method']) for r in records})}.")
    evaluations = evaluate_with_seeds(chosen, args.model_dir, eval_seeds,
                                      os.path.join(args.output_dir, "evaluations.jsonl"), args.gnelbo_grid)
    study = seed_study(chosen, evaluations, names, eval_seeds)
    with open(os.path.join(args.output_dir, args.comparison_name + ".json"), "w") as f:
        json.dump(study, f, indent=1)
    table = study_markdown(study)
    with open(os.path.join(args.output_dir, args.comparison_name + ".md"), "w") as f:
        f.write(table)
    print(table, file=sys.stderr)
    return study


def main(argv=None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args) -> int:
    os.makedirs(args.output_dir, exist_ok=True)
    runs_path = os.path.join(args.output_dir, "runs.jsonl")
    if args.summarize is not None:
        records = read_records(args.summarize or [runs_path])
        summarize(records, args.output_dir, args.eval_seed, args.model_dir)
        if args.compare:
            compare(records, args, [_row_name(*m) for m in args.compare])
        return 0
    runs = plan_runs(args)
    done = {record_key(r) for r in read_records([runs_path])}
    todo = [run for run in runs if run.key() not in done]
    if len(todo) < len(runs):
        print(f"{len(runs) - len(todo)} of {len(runs)} runs already in {runs_path}; running the other {len(todo)}.",
              file=sys.stderr)
    bar = tqdm(total=len(todo), desc="runs", file=sys.stderr)
    for run in todo:
        iterations = tqdm(total=run.num_iter, desc=f"{run.name} seed {run.seed}", leave=False, file=sys.stderr)
        progress = lambda i, terms: iterations.update(i - iterations.n)  # noqa: E731
        record = run_toy(run, model_dir=args.model_dir, callback=progress, device=args.device)
        iterations.close()
        append_record(runs_path, record)
        print(json.dumps({k: v for k, v in record.items() if k not in ("settings", "final_terms")}), flush=True)
        bar.set_postfix_str(f"{run.dataset} {run.name} seed {run.seed}: KL {record['kl']:.2f} JSD {record['jsd']:.2f}")
        bar.update(1)
    bar.close()
    summarize(read_records([runs_path]), args.output_dir, args.eval_seed, args.model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
