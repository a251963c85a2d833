r"""Evaluate a saved pipeline: FID of samples against the data, reconstruction MSE and PSNR, written as JSON.

    asintrovae-evaluate --pipeline as-introvae-digits --num_samples 2000 --output metrics.json
    asintrovae-evaluate --pipeline my-run --dataset_name cifar10 --image_column img \
        --metrics fid reconstruction --inception_weights inception-2015-12-05.pt

`digits_fid` (always available offline) is the Frechet distance over the features of the small digit classifier
shipped in the package; `fid` is the standard Inception FID and needs its TorchScript weights on disk.
"""

import argparse
import json
import sys

import torch

from asintrovae_hf import AsIntroVAEPipeline

from asintrovae_hf.zoo import resolve_pipeline
from asintrovae_hf.data import ImageTransform, load_image_dataset, resolve_class_column, resolve_image_column
from asintrovae_hf.evaluation.image_metrics import evaluate_pipeline


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="asintrovae-evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True,
                   help="A folder written by save_pretrained, a Hub id, or a shipped "
                        "pipeline's name (asintrovae_hf.zoo, e.g. as-introvae-mnist-5k).")
    p.add_argument("--dataset_name", default=None, help="Default: the built-in digits.")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--train_data_dir", default=None)
    p.add_argument("--image_column", default=None)
    p.add_argument("--class_column", default="label",
                   help="For a class-conditional pipeline: the column of class labels (the built-in digits: label).")
    p.add_argument("--split", default="train")
    p.add_argument("--num_samples", type=int, default=2000)
    p.add_argument("--max_real", type=int, default=None, help="Real images used (default: all).")
    p.add_argument("--metrics", nargs="+", default=["digits_fid", "reconstruction"],
                   choices=("fid", "torchmetrics_fid", "digits_fid", "reconstruction", "class_accuracy",
                            "class_coverage"),
                   help="digits_fid (offline, the default), torchmetrics_fid (the standard FID through torchmetrics: "
                        "pip install 'asintrovae-hf[fid]', Inception weights downloaded on first use), fid (the "
                        "Inception network from a local TorchScript file), reconstruction (MSE, PSNR), class_accuracy "
                        "(class-conditional digits: the digit classifier's accuracy on samples of each class), "
                        "class_coverage (digits: the classes the digit classifier finds among the samples).")
    p.add_argument("--inception_weights", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file (default: print only).")
    return p.parse_args(argv)


def load_real_images(args, pipeline):
    """The real images at the model's size, and their class labels for a class-conditional pipeline (else `None`)."""
    dataset = load_image_dataset(args.dataset_name, args.train_data_dir, args.dataset_config_name, split=args.split)
    column = resolve_image_column(dataset, args.image_column)
    if args.max_real is not None:
        dataset = dataset.select(range(min(args.max_real, len(dataset))))
    config = pipeline.encoder.config
    transform = ImageTransform(config.sample_size, config.in_channels, center_crop=True, random_flip=False)
    images = torch.stack([transform(image) for image in dataset[column]])
    if not pipeline.num_classes:
        return images, None
    resolve_class_column(dataset, args.class_column)
    return images, torch.as_tensor(dataset[args.class_column]).long()


def main(argv=None):
    args = parse_args(argv)
    try:
        pipeline = AsIntroVAEPipeline.from_pretrained(resolve_pipeline(args.pipeline))
        real, labels = load_real_images(args, pipeline)
        results = evaluate_pipeline(pipeline, real, args.num_samples, metrics=args.metrics,
                                    inception_weights=args.inception_weights, seed=args.seed, real_labels=labels)
    except (FileNotFoundError, ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    results["pipeline"] = args.pipeline
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
