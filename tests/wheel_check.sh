#!/usr/bin/env bash
# The package as a pip user gets it: build the wheel, install it with its [train,eval] extras into a fresh virtual
# environment in a temporary folder (no source tree on the path), and run what the README runs: every installed
# command's --help, a 3-step training (one process, then its resolved configuration replayed by two gloo ranks under
# `accelerate launch -m`), asintrovae-sample and asintrovae-evaluate on its output, and a shipped configuration.
# Not part of the default pytest run (it takes a minute or more); .ci/run runs it as its own stage:
#   bash tests/wheel_check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
step() { echo "wheel check ($((SECONDS - started)) s): $*"; }

step "building the wheel"
"$python" -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$root"
wheel="$(ls "$work"/dist/asintrovae_hf-*.whl)"
"$python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert not [n for n in names if n.startswith("scripts/")], "the wheel holds the repository's scripts/"
for name in ("digits", "mnist", "mnist-5k", "cifar10", "celeba128", "celeba256"):
    assert f"asintrovae_hf/configs/{name}.yaml" in names, f"the wheel lacks the configuration {name}"
entry_points = zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
assert "asintrovae-train = asintrovae_hf.commands.train:main" in entry_points, entry_points
for name in ("as-introvae-mnist-5k", "soft-introvae-mnist-5k", "as-introvae-digits", "soft-introvae-digits"):
    for part in ("model_index.json", "zoo_entry.json", "README.md", "encoder/diffusion_pytorch_model.safetensors",
                 "decoder/diffusion_pytorch_model.safetensors"):
        assert f"asintrovae_hf/zoo_pipelines/{name}/{part}" in names, f"the wheel lacks {name}/{part}"
assert "asintrovae_hf/assets/mnist5k_classifier.safetensors" in names
PY

step "installing $(basename "$wheel")[train,eval] into a fresh virtual environment"
"$python" -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
cd "$work"  # no source tree here
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
pip install -q "${wheel}[train,eval]"
python - "$root" <<'PY'
import sys, asintrovae_hf
assert not asintrovae_hf.__file__.startswith(sys.argv[1]), f"imported from the source tree: {asintrovae_hf.__file__}"
print("asintrovae_hf from", asintrovae_hf.__file__)
PY

step "--help of every command"
for command in train evaluate sample toy2d ood demo convert push-space; do
  asintrovae-$command --help > "help-$command.txt"
  head -1 "help-$command.txt"
done

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
tiny=(--resolution 8 --block_out_channels 8,16 --latent_dim 4 --train_batch_size 16 --max_train_samples 64
      --num_grid_images 8 --beta_neg 8 --report_to none)
step "asintrovae-train, 3 steps"
asintrovae-train "${tiny[@]}" --max_train_steps 3 --output_dir run 2> train.log || { tail -20 train.log; exit 1; }
test -f run/model_index.json && test -f run/config.yaml

step "the resolved configuration replayed by two gloo ranks: accelerate launch -m asintrovae_hf.commands.train"
port="$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")"
ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
  --dynamo_backend no --main_process_port "$port" -m asintrovae_hf.commands.train --config run/config.yaml \
  --output_dir run2 2> launch.log || { tail -30 launch.log; exit 1; }
python - <<'PY'
import json
summary = json.load(open("run2/train_summary.json"))
assert summary["world_size"] == 2 and summary["global_step"] == 3, summary
print("two ranks:", summary["distributed_type"], "world size", summary["world_size"])
PY

step "asintrovae-sample and asintrovae-evaluate on the trained pipeline"
asintrovae-sample --pipeline run --num_images 16 --output_dir samples --grid grid.png --seed 1 2> sample.log \
  || { tail -5 sample.log; exit 1; }
test "$(ls samples | wc -l)" = 16 && test -f grid.png
asintrovae-evaluate --pipeline run --num_samples 64 --metrics digits_fid reconstruction --output metrics.json \
  > /dev/null 2> evaluate.log || { tail -5 evaluate.log; exit 1; }
python -c "import json; m = json.load(open('metrics.json')); print('evaluate:', sorted(m))"

step "a shipped pipeline (the zoo) sampled and scored with no training, and the built-in MNIST-5k"
asintrovae-sample --pipeline as-introvae-mnist-5k --num_images 8 --grid zoo.png --seed 0 2> zoo.log \
  || { tail -5 zoo.log; exit 1; }
test -f zoo.png
python - <<'PY'
import torch
from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.builtin_datasets import load_builtin_arrays
from asintrovae_hf.zoo import zoo_names, zoo_path

names = zoo_names()
assert {"as-introvae-mnist-5k", "soft-introvae-mnist-5k", "as-introvae-digits", "soft-introvae-digits"} <= set(names)
pipe = AsIntroVAEPipeline.from_pretrained(zoo_path("soft-introvae-digits"))
print("zoo:", names, pipe(batch_size=2, generator=torch.manual_seed(0), output_type="pt").images.shape)
print("mnist-5k held-out:", load_builtin_arrays("mnist-5k", "test")[0].shape)
PY

step "a shipped configuration by name"
python -c "from asintrovae_hf.training.args import parse_args; c = parse_args(['--config', 'mnist']); \
assert c.model.resolution == 28 and c.data.dataset_name == 'ylecun/mnist'; print('--config mnist: ok')"
step "passed"
