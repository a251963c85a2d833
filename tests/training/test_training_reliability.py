"""Training with bad input, hostile checkpoints, changed options and damaged data: one clear line, nothing executed,
nothing lost. Also: the options diffusers users expect (accumulation, clipping, EMA, a pretrained start)."""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import asintrovae_hf.training.checkpointing as checkpointing
from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY as BASE, reset_accelerate as reset

TINY = BASE + ["--save_images_steps", "1000"]
pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run with a checkpoint at each step, shared by the resume tests (each works on a copy)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    reset()
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1"]))
    reset()
    return out


def copy_run(trained, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


# ---- checkpoints never execute code ------------------------------------------------------------------------------


class Payload:
    """Unpickling this writes a marker file: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_checkpoint_layout_opens_with_from_pretrained(trained):
    checkpoint = trained / "checkpoint-2"
    names = sorted(p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file())
    assert not [n for n in names if n.endswith(".pkl") and not n.startswith("random_states_")], names
    assert "training_state.json" in names and "decoder_ema/ema_state.json" in names
    encoder = AsIntroVAEEncoder.from_pretrained(checkpoint, subfolder="encoder")
    decoder = AsIntroVAEDecoder.from_pretrained(checkpoint, subfolder="decoder_ema")
    pipe = AsIntroVAEPipeline(encoder=encoder, decoder=decoder)
    assert pipe(batch_size=2, output_type="np").images.shape == (2, 8, 8, 1)
    # the EMA folder holds the averaged weights with the live BatchNorm statistics
    live = load_file(checkpoint / "decoder" / "diffusion_pytorch_model.safetensors")
    ema = load_file(checkpoint / "decoder_ema" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(live["up_blocks.0.resnet.norm1.running_var"], ema["up_blocks.0.resnet.norm1.running_var"])
    assert not torch.equal(live["fc.0.weight"], ema["fc.0.weight"])


def pickle_files(checkpoint: Path):
    return sorted(p.name for p in checkpoint.iterdir() if p.is_file() and not p.name.endswith((".json", ".safetensors")))


def test_a_planted_payload_in_any_pickle_never_runs(trained, tmp_path, capsys):
    files = pickle_files(trained / "checkpoint-2")
    assert {"optimizer.bin", "optimizer_1.bin", "scheduler.bin", "scheduler_1.bin", "random_states_0.pkl"} <= set(files)
    extra = ["custom_checkpoint_0.pkl", "encoder/modeling.py"]  # an Accelerate custom pickle; code in a folder
    for name in files + extra:
        out = tmp_path / name.replace("/", "_")
        shutil.copytree(trained, out)
        marker = tmp_path / f"marker-{name.replace('/', '_')}"
        torch.save(Payload(marker), out / "checkpoint-2" / name)  # torch's zip format, as Accelerate writes
        reset()
        code = main(TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"])
        line = error_line(capsys)
        assert code == 1 and "checkpoint-2" in line and name.split("/")[-1] in line, line
        assert not marker.exists(), f"{name}: the payload ran"
    # the control: the payload does run when unpickled without weights_only
    torch.save(Payload(tmp_path / "control-marker"), tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)
    assert (tmp_path / "control-marker").exists()


def test_a_corrupt_training_state_is_a_clear_error(trained, tmp_path, capsys):
    out = copy_run(trained, tmp_path)
    (out / "checkpoint-2" / "training_state.json").write_text("{not json")
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]) == 1
    assert "training_state.json" in error_line(capsys)


# ---- resume honours changed options or refuses them ---------------------------------------------------------------


def optimizer_state(checkpoint: Path, name="optimizer.bin"):
    from accelerate.utils import load

    return load(checkpoint / name, weights_only=True)


def test_resume_applies_a_lowered_learning_rate_and_new_adam_settings(trained, tmp_path, caplog):
    out = copy_run(trained, tmp_path)
    args = TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--checkpointing_steps", "1",
                   "--resume_from_checkpoint", "latest"]
    with caplog.at_level("INFO"):
        train(parse_args(args + ["--learning_rate", "1e-5", "--adam_beta1", "0.5", "--beta_neg", "4"]))
    assert "Resuming with --learning_rate 1e-05 (the checkpoint's run had 0.0002)" in caplog.text
    assert "Resuming with --beta_neg 4.0" in caplog.text
    for name in ("optimizer.bin", "optimizer_1.bin"):  # both networks' optimizers, as saved after the resumed step
        group = optimizer_state(out / "checkpoint-3", name)["param_groups"][0]
        assert group["lr"] == pytest.approx(1e-5) and group["betas"][0] == 0.5
    state = json.loads((out / "checkpoint-3" / "training_state.json").read_text())
    assert state["global_step"] == 3 and state["options"]["learning_rate"] == 1e-5


@pytest.mark.parametrize("flag, value, shown", [("--train_batch_size", "8", "--train_batch_size was 16"),
                                                ("--resolution", "16", "--resolution was 8"),
                                                ("--seed", "3", "--seed was 0")])
def test_resume_refuses_what_it_cannot_honour(trained, tmp_path, capsys, flag, value, shown):
    out = copy_run(trained, tmp_path)
    args = TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]
    assert main(args + [flag, value]) == 1
    line = error_line(capsys)
    assert shown in line and "checkpoint-2" in line
    assert not (out / "checkpoint-3").exists()


# ---- failures while writing ---------------------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = checkpointing.Accelerator.save_state
    calls = {"n": 0}

    def save_state(self, output_dir, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.makedirs(output_dir, exist_ok=True)
            (Path(output_dir) / "optimizer.bin").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return real_save(self, output_dir, *args, **kwargs)

    monkeypatch.setattr(checkpointing.Accelerator, "save_state", save_state)
    code = main(TINY + ["--output_dir", str(out), "--max_train_steps", "4", "--checkpointing_steps", "1"])
    line = error_line(capsys)
    assert code == 1 and "checkpoint-2" in line and "No space left on device" in line and "checkpoint-1" in line
    assert (out / "checkpoint-1" / "training_state.json").exists()
    assert not (out / "checkpoint-2").exists() and not (out / "checkpoint-2.partial").exists()
    monkeypatch.undo()
    reset()
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1",
                        "--resume_from_checkpoint", "latest"]) == 0  # the previous checkpoint resumes


def test_an_output_folder_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(TINY + ["--output_dir", str(tmp_path / "file" / "run"), "--max_train_steps", "1"]) == 1
    line = error_line(capsys)
    assert str(tmp_path / "file" / "run") in line and "output folder" in line


# ---- bad options and data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--learning_rate", "-1"], "--learning_rate must be a positive number, got -1.0"),
    (["--lr_scheduler", "warmup"], "--lr_scheduler must be one of linear, cosine"),
    (["--num_grid_images", "1"], "--num_grid_images must be at least 2"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be a positive integer"),
    (["--max_grad_norm", "0"], "--max_grad_norm must be a positive number"),
    (["--beta_neg", "-2"], "beta_neg must be >= 0"),
    (["--ema_max_decay", "1.5"], "--ema_max_decay must be in [0, 1)"),
])
def test_bad_options_are_one_line_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(TINY + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_batch_of_one_with_a_one_pixel_feature_map_fails_before_training(tmp_path, capsys):
    assert main(TINY + ["--output_dir", str(tmp_path / "o"), "--train_batch_size", "1", "--resolution", "4",
                        "--max_train_steps", "1"]) == 1
    line = error_line(capsys)
    assert "--train_batch_size 1" in line and "1x1" in line
    assert not (tmp_path / "o").exists()


def test_a_config_with_a_wrong_type_names_the_file(tmp_path):
    pipe = AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, sample_size=8, latent_dim=4,
                                                        block_out_channels=(8,)),
                              decoder=AsIntroVAEDecoder(out_channels=1, sample_size=8, latent_dim=4,
                                                        block_out_channels=(8,)))
    pipe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "decoder" / "config.json").read_text())
    config["latent_dim"] = "eight"
    (tmp_path / "decoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"decoder/config.json cannot be used: AsIntroVAEDecoder: latent_dim must be "
                                         r"a positive integer, got 'eight' \(str\)"):
        AsIntroVAEPipeline.from_pretrained(tmp_path)


def test_unreadable_images_are_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(18):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((folder / "0.png").read_bytes()[:40])
    with caplog.at_level("WARNING"):
        summary = train(parse_args(TINY + ["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "o"),
                                           "--max_train_steps", "4", "--train_batch_size", "8"]))
    assert summary["global_step"] == 4
    assert "empty.png" in caplog.text and "truncated.png" in caplog.text


# ---- the options diffusers users expect ---------------------------------------------------------------------------


def test_ema_follows_diffusers_formula(tmp_path):
    """With --ema_max_decay 0.5 the EMA after step t is d_t ema + (1 - d_t) weights, d_1 = 0, d_t = min(0.5,
    t / (t + 9)) (diffusers' EMAModel without warm-up), computed here from the decoder weights of each checkpoint."""
    out = tmp_path / "run"
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--checkpointing_steps", "1",
                             "--ema_max_decay", "0.5"]))
    weights = [load_file(out / f"checkpoint-{t}" / "decoder" / "diffusion_pytorch_model.safetensors")
               for t in (1, 2, 3)]
    ema = load_file(out / "checkpoint-3" / "decoder_ema" / "diffusion_pytorch_model.safetensors")
    state = json.loads((out / "checkpoint-3" / "decoder_ema" / "ema_state.json").read_text())
    assert state["optimization_step"] == 3 and state["decay"] == 0.5
    name = "fc.0.weight"
    expected = weights[0][name]
    for t, w in ((2, weights[1]), (3, weights[2])):
        d = min(0.5, t / (t + 9))
        expected = d * expected + (1 - d) * w[name]
    torch.testing.assert_close(ema[name], expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ema[name], weights[2][name])


def test_bf16_is_close_to_fp32(tmp_path):
    """Three steps in bf16 autocast against fp32 from the same start: the first logged losses agree within 2 %
    (bf16 keeps 8 mantissa bits: about 0.4 % per operation)."""
    common = TINY + ["--max_train_steps", "1", "--logging_steps", "1"]
    fp32 = train(parse_args(common + ["--output_dir", str(tmp_path / "fp32"), "--mixed_precision", "no"]))
    reset()
    bf16 = train(parse_args(common + ["--output_dir", str(tmp_path / "bf16"), "--mixed_precision", "bf16"]))
    assert bf16["mixed_precision"] == "bf16"
    for key in ("loss_rec", "kl_real", "loss_encoder", "loss_decoder"):
        assert bf16["final_losses"][key] == pytest.approx(fp32["final_losses"][key], rel=0.02), key


def test_max_grad_norm_clips_both_networks(tmp_path, monkeypatch):
    import asintrovae_hf.training.loop as training

    norms = []
    real_step = training.train_step

    def recording_step(*args, **kwargs):
        clip = kwargs["clip_grad_norm"]

        def recording_clip(params, max_norm):
            params = list(params)
            total = clip(params, max_norm)
            norms.append((float(total), float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(p.grad) for p in params])))))
            return total

        return real_step(*args, **{**kwargs, "clip_grad_norm": recording_clip})

    monkeypatch.setattr(training, "train_step", recording_step)
    train(parse_args(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "2", "--max_grad_norm",
                             "1e-3"]))
    assert len(norms) == 4  # encoder and decoder, two steps
    assert all(before > 1e-3 and after == pytest.approx(1e-3, rel=1e-4) for before, after in norms)


def test_start_from_a_pretrained_pipeline(trained, tmp_path, caplog):
    """The networks start from the saved pipeline (a learning rate of 1e-12 leaves its weights as they were), whose
    configuration replaces the model options."""
    with caplog.at_level("INFO"):
        summary = train(parse_args(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1",
                                           "--resolution", "16", "--learning_rate", "1e-12",
                                           "--pretrained_model_name_or_path", str(trained)]))
    assert summary["global_step"] == 1 and "resolution 8" in caplog.text
    started, saved = AsIntroVAEPipeline.from_pretrained(trained), AsIntroVAEPipeline.from_pretrained(tmp_path / "o")
    assert saved.decoder.config.sample_size == 8
    torch.testing.assert_close(saved.encoder.fc.weight, started.encoder.fc.weight, rtol=0, atol=1e-9)


def test_a_crash_while_replacing_a_checkpoint_of_the_same_step_keeps_one(trained, tmp_path):
    """Rewriting checkpoint-N sets the old one aside as checkpoint-N.replaced until the new one is renamed in: after
    a crash between the two renames, the next start puts the old one back (the unfinished .partial goes)."""
    out = copy_run(trained, tmp_path)
    os.replace(out / "checkpoint-2", out / "checkpoint-2.replaced")
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-2.partial")
    checkpointing.remove_partial_checkpoints(str(out))
    assert checkpointing.TrainingState.load(out / "checkpoint-2").global_step == 2
    assert not (out / "checkpoint-2.replaced").exists() and not (out / "checkpoint-2.partial").exists()
    # the new one in place, the old one still set aside: the old one goes
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-2.replaced")
    checkpointing.remove_partial_checkpoints(str(out))
    assert not (out / "checkpoint-2.replaced").exists() and (out / "checkpoint-2").is_dir()
