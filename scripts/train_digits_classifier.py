#!/usr/bin/env python
"""Train the classifier behind a built-in dataset's held-out metrics and write its weights and training record.

    python scripts/train_digits_classifier.py                      # src/asintrovae_hf/assets/digits_classifier.*
    python scripts/train_digits_classifier.py --dataset mnist-5k   # src/asintrovae_hf/assets/mnist5k_classifier.*

Reproducible on CPU (fixed seeds, one thread by default): the dataset's fixed train split only (digits: scikit-learn's
1,797 digits split 80/20, `random_state = --split_seed`, the split of `asintrovae_hf.builtin_datasets`; mnist-5k:
its 4,000 / 1,000 split), inputs at a random resolution per batch (PIL bilinear, as the project's data are; digits 8
to 32, mnist-5k 20 to 36), a light random affine augmentation (rotation, scale, shift), AdamW with a one-cycle
schedule. Prints the held-out accuracy at several resolutions and writes the safetensors file (the record in its
header) and a sibling JSON file with the same record.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from asintrovae_hf.builtin_datasets import load_builtin_arrays, split_indices
from asintrovae_hf.evaluation.digits_classifier import (
    CLASSIFIER_WEIGHTS,
    FEATURE_DIM,
    METADATA_KEY,
    METADATA_PATH,
    WEIGHTS_PATH,
    DigitsClassifier,
    digits_split,
    digits_to_tensor,
    load_digits_uint8,
)
from asintrovae_hf.process_settings import torch_threads

EVAL_RESOLUTIONS = {"digits": (8, 12, 16, 24, 28, 32), "mnist-5k": (24, 28, 32)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(CLASSIFIER_WEIGHTS), default="digits")
    p.add_argument("--seed", type=int, default=0, help="Initialisation, batch order, resolutions, augmentation.")
    p.add_argument("--split_seed", type=int, default=0, help="random_state of the stratified split.")
    p.add_argument("--test_size", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=None, help="Default: 40 (digits), 15 (mnist-5k).")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    p.add_argument("--min_resolution", type=int, default=None, help="Default: 8 (digits), 20 (mnist-5k).")
    p.add_argument("--max_resolution", type=int, default=None, help="Default: 32 (digits), 36 (mnist-5k).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", type=str, default=None, help="Default: the dataset's file in the package's assets.")
    p.add_argument("--metadata_output", type=str, default=None, help="Default: the output with a .json suffix.")
    args = p.parse_args(argv)
    mnist = args.dataset == "mnist-5k"
    defaults = {"epochs": 15 if mnist else 40, "min_resolution": 20 if mnist else 8,
                "max_resolution": 36 if mnist else 32, "output": CLASSIFIER_WEIGHTS[args.dataset]}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.resolution = 28 if mnist else 16  # the size the classifier sees (inputs are resized to it)
    return args


def random_affine(x: torch.Tensor, generator: torch.Generator, max_degrees=12.0, scale=(0.9, 1.1), shift=0.08):
    """Rotate, scale and shift each image of `x` (`[-1, 1]`, background -1) by a random small amount."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(max_degrees)
    s = scale[0] + torch.rand(b, generator=generator) * (scale[1] - scale[0])
    t = (torch.rand(b, 2, generator=generator) * 2 - 1) * shift
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(1) == labels).float().mean().item()


def main(argv=None):
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args):
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.time()

    if args.dataset == "digits":
        pixels, labels_np = load_digits_uint8()
        train_idx, test_idx = digits_split(labels_np, test_size=args.test_size, seed=args.split_seed)
    else:
        pixels, labels_np = (np.array(a) for a in load_builtin_arrays(args.dataset, "all"))
        train_idx, test_idx = split_indices(args.dataset)
    eval_resolutions = EVAL_RESOLUTIONS[args.dataset]
    labels = torch.from_numpy(labels_np)
    resolutions = list(range(args.min_resolution, args.max_resolution + 1))
    by_res = {r: digits_to_tensor(pixels, r) for r in sorted(set(resolutions) | set(eval_resolutions))}

    model = DigitsClassifier(feature_dim=FEATURE_DIM, resolution=args.resolution)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    train_t = torch.from_numpy(np.array(train_idx))
    for epoch in range(args.epochs):
        model.train()
        order = train_t[torch.randperm(len(train_t), generator=generator)]
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            res = resolutions[int(torch.randint(len(resolutions), (1,), generator=generator))]
            x = random_affine(by_res[res][idx], generator)
            y = labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(idx)
        if (epoch + 1) % 5 == 0 or epoch == args.epochs - 1:
            test_acc = accuracy(model, by_res[args.resolution][test_idx], labels[test_idx])
            print(f"epoch {epoch + 1:3d}  loss {loss_sum / total:.4f}  train acc {correct / total:.4f}  "
                  f"held-out acc ({args.resolution}x{args.resolution}) {test_acc:.4f}", flush=True)

    model.eval()
    per_res = {str(r): round(accuracy(model, by_res[r][test_idx], labels[test_idx]), 5) for r in eval_resolutions}
    heldout = min(per_res.values())
    record = {
        "description": f"DigitsClassifier of the {args.dataset} held-out metrics "
                       f"(asintrovae_hf.evaluation.digits_classifier)",
        "dataset": args.dataset,
        "resolution": args.resolution,
        "heldout_accuracy": heldout,
        "heldout_accuracy_definition": "minimum over the resolutions of heldout_accuracy_by_resolution",
        "heldout_accuracy_by_resolution": per_res,
        "num_train": int(len(train_idx)),
        "num_heldout": int(len(test_idx)),
        "split": (f"sklearn train_test_split(test_size={args.test_size}, stratify=labels, "
                  f"random_state={args.split_seed})" if args.dataset == "digits"
                  else f"asintrovae_hf.builtin_datasets.split_indices({args.dataset!r})"),
        "split_seed": args.split_seed,
        "test_size": args.test_size,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "train_resolutions": [args.min_resolution, args.max_resolution],
        "augmentation": "random affine: rotation +-12 deg, scale 0.9-1.1, shift +-4% of the image; "
        "label smoothing 0.05",
        "feature_dim": FEATURE_DIM,
        "data_convention": ("uint8 = round(v * 255 / 16), " if args.dataset == "digits" else "uint8, ")
        + "PIL resize((R, R), BILINEAR), pixel / 255 * 2 - 1",
        "torch_version": torch.__version__,
        "train_seconds": round(time.time() - started, 1),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.output, metadata={METADATA_KEY: json.dumps(record, sort_keys=True)})
    metadata_output = args.metadata_output or (os.path.splitext(args.output)[0] + ".json")
    if args.output == WEIGHTS_PATH and args.metadata_output is None:
        metadata_output = METADATA_PATH
    with open(metadata_output, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    size = os.path.getsize(args.output)
    print(json.dumps({"heldout_accuracy": heldout, "by_resolution": per_res, "bytes": size,
                      "weights": args.output, "metadata": metadata_output}), flush=True)
    if size >= 2 << 20:
        print(f"warning: {args.output} is {size} bytes (>= 2 MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
