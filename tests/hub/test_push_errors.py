"""A Hub error at the end of a finished run: one line, the trained pipeline saved locally, and the command that
retries only the upload, which then works. Against the fake Hub (tests/fake_hub.py), which can refuse a model card
with HTTP 400 as the Hub does for invalid metadata."""

import shlex
import subprocess
import sys

import pytest

import asintrovae_hf.hub as hub
from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.loop import main
from helpers import TINY

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

REFUSAL = '"license" must be one of [apache-2.0, mit, ...]'


def run_pushing(tmp_path, capsys, *extra):
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(TINY + ["--output_dir", str(out), "--max_train_steps", "1", "--save_images_steps", "1000",
                        "--push_to_hub", "--hub_model_id", "digits-card", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    return code, out, err, lines


def retry_words(line: str):
    words = shlex.split(line.split("retry only the upload with: ", 1)[1])
    assert words[:3] == ["python", "-m", "asintrovae_hf.hub"], words
    return [sys.executable] + words[1:]


def test_a_refused_model_card_ends_in_one_line_and_the_upload_can_be_retried(fake_hub, tmp_path, capsys):
    fake_hub.reject_model_card = REFUSAL
    code, out, err, lines = run_pushing(tmp_path, capsys, "--logging_dir", "my-logs")
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    line = lines[0]
    assert "refused the model card (README.md)" in line and REFUSAL in line and f"{fake_hub.user}/digits-card" in line
    assert f"The trained pipeline is saved in {str(out)!r}" in line
    # the finished run is all there, and loads
    assert (out / "README.md").exists() and (out / "train_summary.json").exists()
    assert AsIntroVAEPipeline.from_pretrained(out)(batch_size=2, output_type="np").images.shape == (2, 8, 8, 1)
    assert fake_hub.list_files(f"{fake_hub.user}/digits-card") in ([], [".gitattributes"])  # nothing was committed

    command = retry_words(line)
    assert command[command.index("--logging_dir") + 1] == "my-logs" and str(out) in command
    env = fake_hub.subprocess_env(OMP_NUM_THREADS="1")
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1 and REFUSAL in refused.stderr

    fake_hub.reject_model_card = None  # the metadata fixed (here: the Hub accepts it)
    retried = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr[-3000:]
    files = fake_hub.list_files(f"{fake_hub.user}/digits-card")
    assert {"README.md", "model_index.json", "decoder/diffusion_pytorch_model.safetensors"} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", "my-logs/"))], files


def test_the_hub_going_away_before_the_upload_is_one_line(fake_hub, tmp_path, capsys, monkeypatch):
    def unreachable(**kwargs):
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(hub, "upload_folder", unreachable)
    code, out, err, lines = run_pushing(tmp_path, capsys, "--hub_private_repo")
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "cannot reach the Hub (ConnectionError" in lines[0] and "retry only the upload with: " in lines[0]
    assert "--hub_private_repo" in retry_words(lines[0])
    assert (out / "model_index.json").exists()


def test_the_retry_command_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert hub.main(["--output_dir", str(tmp_path / "nowhere"), "--hub_model_id", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such directory" in err


# ---- issue 34, item 5: a connection cut in the middle of a push -----------------------------------------------------

LOAD_BY_ID = ("import sys\nfrom asintrovae_hf import AsIntroVAEPipeline\n"
              "pipe = AsIntroVAEPipeline.from_pretrained(sys.argv[1])\n"
              "print(pipe(batch_size=2, output_type='np').images.shape)")


def loads_by_id(fake_hub, repo_id):
    result = subprocess.run([sys.executable, "-c", LOAD_BY_ID, repo_id], capture_output=True, text=True, timeout=300,
                            env=fake_hub.subprocess_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0 and "(2, 8, 8, 1)" in result.stdout, result.stderr[-3000:]


@pytest.mark.slow
def test_an_upload_cut_half_way_is_retried_by_huggingface_hub(fake_hub, tmp_path, capsys):
    """The weights go to the CDN (Git LFS); huggingface_hub retries that PUT itself (`http_backoff`)."""
    import time

    fake_hub.cut_connections = {"PUT /upload/": 1}
    started = time.monotonic()
    code, out, err, lines = run_pushing(tmp_path, capsys)
    took = time.monotonic() - started
    assert code == 0 and not lines, err[-3000:]
    cut = [r for r in fake_hub.requests if r.status == 0]
    assert len(cut) == 1 and cut[0].path.startswith("/upload/")
    again = [r for r in fake_hub.requests if r.server == "cdn" and r.path == cut[0].path and r.status == 200]
    assert len(again) == 1  # the same object, uploaded again after the cut
    repo_id = f"{fake_hub.user}/digits-card"
    assert "decoder/diffusion_pytorch_model.safetensors" in fake_hub.list_files(repo_id)
    loads_by_id(fake_hub, repo_id)
    print(f"\n[issue 34] cut upload (LFS PUT cut half-way once): retried by huggingface_hub, the run exited 0 after "
          f"{took:.1f} s (training included); the repository loads by its id")


@pytest.mark.slow
def test_a_commit_cut_half_way_is_one_line_and_pushing_again_completes(fake_hub, tmp_path, capsys):
    """The commit itself (a POST huggingface_hub does not retry: it is not idempotent) cut on every try: one line
    saying the local pipeline is intact, with the command that pushes it again; that command then completes."""
    repo_id = f"{fake_hub.user}/digits-card"
    fake_hub.cut_connections = {f"POST /api/models/{repo_id}/commit/": 100}
    code, out, err, lines = run_pushing(tmp_path, capsys)
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    line = lines[0]
    assert "cannot reach the Hub" in line and f"saved in {str(out)!r} and intact" in line, line
    assert fake_hub.list_files(repo_id) in ([], [".gitattributes"])  # nothing half-committed
    assert AsIntroVAEPipeline.from_pretrained(out)(batch_size=2, output_type="np").images.shape == (2, 8, 8, 1)

    fake_hub.cut_connections = {}  # the network is back
    command = retry_words(line)  # run here (the module's main), not in a subprocess: the same code, faster
    assert command[1:3] == ["-m", "asintrovae_hf.hub"]
    assert hub.main(command[3:]) == 0, capsys.readouterr().err[-3000:]
    assert "model_index.json" in fake_hub.list_files(repo_id)
    loads_by_id(fake_hub, repo_id)
    print(f"\n[issue 34] cut upload (commit cut on every try): exit 1 with one line ({line[:120]}...); the printed "
          f"command pushed again; the repository loads by its id")
