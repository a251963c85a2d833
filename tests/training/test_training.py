"""The training script end to end: outputs, NaN stop, bad input, checkpoints and exact resume, Hub upload."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import asintrovae_hf.training.loop as training
from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY, TRAIN_SCRIPT as SCRIPT, pipeline_weights as final_weights, reset_accelerate
from helpers import run_training_script as run_script

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def test_training_writes_pipeline_card_grids_checkpoints_and_logs(tmp_path):
    out = tmp_path / "run"
    summary = train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "6", "--checkpointing_steps", "3",
                                       "--save_images_steps", "3", "--logging_steps", "2", "--report_to", "tensorboard"]))
    assert summary["global_step"] == 6 and summary["world_size"] == 1
    assert {"loss_encoder", "loss_decoder", "loss_rec", "kl_real", "c"} <= set(summary["final_losses"])
    for name in ["model_index.json", "README.md", "samples.png", "reconstructions.png", "samples_from_pretrained.png",
                 "samples-000003.png", "reconstructions-000006.png", "train_summary.json",
                 "checkpoint-3/encoder/diffusion_pytorch_model.safetensors", "checkpoint-3/decoder/config.json",
                 "checkpoint-6/decoder_ema/diffusion_pytorch_model.safetensors", "checkpoint-6/training_state.json"]:
        assert (out / name).exists(), name
    assert list((out / "logs").rglob("events.out.tfevents*")), "no tensorboard event file"
    card = (out / "README.md").read_text()
    assert "beta_neg" in card and "as-introvae" in card and "samples.png" in card and "loss_encoder" in card
    pipe = AsIntroVAEPipeline.from_pretrained(out)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0)).images
    assert images[0].size == (8, 8) and images[0].mode == "L"


def test_ema_decoder_is_what_gets_saved(tmp_path):
    common = TINY + ["--max_train_steps", "4", "--checkpointing_steps", "100", "--save_images_steps", "100"]
    train(parse_args(common + ["--output_dir", str(tmp_path / "ema"), "--ema_decay", "0.5"]))
    reset_accelerate()
    train(parse_args(common + ["--output_dir", str(tmp_path / "raw"), "--no-use_ema"]))
    ema, raw = final_weights(tmp_path / "ema"), final_weights(tmp_path / "raw")
    # same run, same encoder; the saved decoder differs only by the averaging
    torch.testing.assert_close(ema["encoder.fc.weight"], raw["encoder.fc.weight"])
    assert not torch.allclose(ema["decoder.fc.0.weight"], raw["decoder.fc.0.weight"])


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_step, calls = training.train_step, {"n": 0}

    def step_with_corrupt_batch(objective, encoder, decoder, opt_e, opt_d, x, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            x = x * float("nan")
        return real_step(objective, encoder, decoder, opt_e, opt_d, x, *args, **kwargs)

    monkeypatch.setattr(training, "train_step", step_with_corrupt_batch)
    out = tmp_path / "nan"
    with pytest.raises(training.NonFiniteLossError) as info:
        train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "12", "--checkpointing_steps", "3",
                                 "--logging_steps", "4"]))
    message = str(info.value)
    assert "at step 5" in message and "loss_encoder=nan" in message and "--beta_neg" in message
    assert "checkpoint-3" in message
    assert (out / "checkpoint-3").is_dir() and not (out / "checkpoint-6").exists()
    assert not (out / "model_index.json").exists()
    good = load_file(out / "checkpoint-3" / "encoder" / "diffusion_pytorch_model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())


def test_unsupported_resolution_is_rejected_before_training(tmp_path, capsys):
    code = main(TINY + ["--output_dir", str(tmp_path / "x"), "--resolution", "18"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--resolution 18 cannot be used" in err and "multiple of 4" in err and "16, 20" in err
    assert not (tmp_path / "x").exists()


def test_missing_image_column_lists_columns(tmp_path, capsys):
    from asintrovae_hf.data import load_digits_dataset

    load_digits_dataset().select(range(40)).rename_column("image", "picture").save_to_disk(str(tmp_path / "ds"))
    code = main(TINY + ["--output_dir", str(tmp_path / "x"), "--dataset_name", str(tmp_path / "ds"),
                        "--image_column", "photo", "--num_channels", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "photo" in err and "picture" in err and "label" in err


def test_unknown_option_is_an_error():
    with pytest.raises(SystemExit):
        parse_args(["--objective", "gan"])
    with pytest.raises(SystemExit):
        parse_args(["--block_out_channels", "a,b"])


def test_trains_from_an_image_folder_in_rgb(tmp_path):
    from PIL import Image
    import numpy as np

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    summary = train(parse_args(TINY + ["--train_data_dir", str(folder), "--output_dir", str(out), "--max_train_steps", "2",
                                       "--train_batch_size", "8", "--random_flip"]))
    assert summary["global_step"] == 2
    assert AsIntroVAEPipeline.from_pretrained(out).encoder.config.in_channels == 3


def test_bf16_mixed_precision_on_cpu(tmp_path):
    summary = train(parse_args(TINY + ["--output_dir", str(tmp_path / "bf16"), "--max_train_steps", "3",
                                       "--mixed_precision", "bf16", "--logging_steps", "1"]))
    assert summary["mixed_precision"] == "bf16" and summary["global_step"] == 3
    assert all(v == v for v in summary["final_losses"].values())


def test_vae_warmup_then_adversarial_schedule_is_logged(tmp_path):
    summary = train(parse_args(TINY + ["--output_dir", str(tmp_path / "w"), "--max_train_steps", "4",
                                       "--num_vae_steps", "3", "--logging_steps", "1", "--schedule", "linear"]))
    # c counts adversarial iterations only: the last step is the first adversarial one, c(0) = 0
    # (counted over all iterations it would be min(5 * 3 / 4, 1) = 1)
    assert summary["final_losses"]["c"] == 0.0
    assert "dis_encoder" in summary["final_losses"] and "exp_elbo_rec" in summary["final_losses"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    args = TINY + ["--max_train_steps", "16", "--checkpointing_steps", "4", "--save_images_steps", "1000",
                   "--logging_steps", "4", "--random_flip"]
    straight = run_script(args + ["--output_dir", str(tmp_path / "a")])
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "b"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--output_dir", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoint-8").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-8").is_dir() and not (out / "model_index.json").exists(), "killed too late"

    resumed = run_script(args + ["--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stderr
    a, b = json.loads((tmp_path / "a/train_summary.json").read_text()), json.loads((out / "train_summary.json").read_text())
    assert a["global_step"] == b["global_step"] == 16
    wa, wb = final_weights(tmp_path / "a"), final_weights(out)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)


def test_corrupt_checkpoint_gives_clear_error(tmp_path, capsys):
    out = tmp_path / "c"
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "2"]))
    weights = out / "checkpoint-4" / "encoder" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    reset_accelerate()
    code = main(TINY + ["--output_dir", str(out), "--max_train_steps", "6", "--resume_from_checkpoint", "latest"])
    err = capsys.readouterr().err
    assert code == 1 and "checkpoint-4" in err and "cannot be loaded" in err
    reset_accelerate()
    assert main(TINY + ["--output_dir", str(out), "--resume_from_checkpoint", "checkpoint-9"]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


def test_push_to_hub_offline_fails_clearly_before_training(tmp_path):
    result = run_script(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "2", "--push_to_hub",
                                "--hub_model_id", "someone/x"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "someone/x" in result.stderr
    assert not (tmp_path / "o" / "checkpoint-2").exists()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_equal_one_process_accumulating_two_batches(tmp_path):
    """Two gloo ranks with batches of 8 against one process accumulating two batches of 8 per step: the same
    samples per step (rank r gets the loader's batch 2j + r, micro-batch k the batch 2j + k), the same noise (streams
    numbered across processes), the same averaged gradient. Every parameter and buffer is equal across the ranks, and
    every parameter equals the single process's (BatchNorm running statistics legitimately differ: DDP keeps rank 0's,
    one process updates them with both micro-batches)."""
    # the installed package's command under Accelerate's launcher (`accelerate launch -m`); a piecewise-constant
    # learning rate whose step rules must be scaled by the processes (a prepared scheduler steps once per process)
    common = TINY + ["--train_batch_size", "8", "--max_train_steps", "4", "--checkpointing_steps", "2",
                     "--lr_scheduler", "piecewise_constant", "--lr_step_rules", "1:2,0.5"]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()), "-m", "asintrovae_hf.commands.train", *common, "--output_dir", str(tmp_path / "ddp")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and "MULTI_CPU" in summary["distributed_type"]
    assert summary["global_step"] == 4 and summary["final_losses"]["lr_encoder"] == pytest.approx(0.5 * 2e-4)
    rank0, rank1 = summary["replica_checksums"]
    assert len(rank0) > 40 and any("running_var" in name for name in rank0)  # parameters and buffers
    assert rank0 == rank1  # exactly

    single = run_script(common + ["--gradient_accumulation_steps", "2", "--output_dir", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]
    assert json.loads((tmp_path / "one" / "train_summary.json").read_text())["world_size"] == 1
    ddp, one = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "one")
    params = [k for k in ddp if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 30
    for k in params:
        torch.testing.assert_close(ddp[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(ddp[k], one[k]) for k in ddp if k.endswith("running_mean"))
    AsIntroVAEPipeline.from_pretrained(tmp_path / "ddp")
