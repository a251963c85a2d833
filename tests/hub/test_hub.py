"""The model card and the Hub upload: card contents, the files uploaded, clear errors without a network."""

import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects

import asintrovae_hf.hub as hub
from asintrovae_hf.hub import HubError, create_model_card, files_to_upload, push_to_hub

ROOT = Path(__file__).resolve().parents[2]

HYPERPARAMETERS = {
    "objective": "as-introvae",
    "resolution": 16,
    "learning_rate": 0.0002,
    "block_out_channels": "32,64",
    "beta_neg": 256.0,
    "use_ema": True,
    "dataset_name": None,
    "note": "a|b",
}
LOSSES = {"loss_encoder": 1.23456789, "loss_decoder": -0.5, "kl_real": 12.0, "c": 1.0}
PIPELINE_FILES = [
    "README.md",
    "decoder/config.json",
    "decoder/diffusion_pytorch_model.safetensors",
    "encoder/config.json",
    "encoder/diffusion_pytorch_model.safetensors",
    "model_index.json",
    "reconstructions.png",
    "samples.png",
    "train_summary.json",
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any real request in this module fails at once (huggingface_hub reads HF_HUB_OFFLINE at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def make_output_dir(root: Path) -> Path:
    """A training output folder: the pipeline, the card, grids, and checkpoints and logs that must stay local."""
    for name in PIPELINE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    for name in ["checkpoint-2/model.safetensors", "checkpoint-2/random_states_0.pkl",
                 "checkpoint-4.partial/model.safetensors", "logs/asintrovae/events.out.tfevents.1",
                 ".git/HEAD", ".cache/huggingface/upload/x.metadata"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    return root


# ---- model card ------------------------------------------------------------------------------------------------


def test_packaged_template_is_the_model_cards_template():
    canonical = ROOT / "model_cards" / "model_card_template.md"
    assert hub.TEMPLATE_PATH.read_bytes() == canonical.read_bytes()


def test_model_card_contents(tmp_path):
    card = create_model_card(str(tmp_path), repo_id="someone/as-introvae-digits", hyperparameters=HYPERPARAMETERS,
                             final_losses=LOSSES, dataset_name="digits", sample_grid="samples.png",
                             objective="as-introvae")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.content == card.content
    data = loaded.data.to_dict()
    assert data["library_name"] == "diffusers" and data["license"] == "apache-2.0"
    assert {"asintrovae", "introvae", "vae", "unconditional-image-generation", "diffusers",
            "diffusers:AsIntroVAEPipeline"} <= set(data["tags"])
    assert "datasets" not in data  # the digits are not a Hub dataset
    text = loaded.text
    assert "# someone/as-introvae-digits" in text and "AS-IntroVAE" in text and "ACML 2022" in text
    assert 'AsIntroVAEPipeline.from_pretrained("someone/as-introvae-digits")' in text
    assert "from asintrovae_hf import AsIntroVAEPipeline" in text and "pipe(batch_size=16).images" in text
    assert "load_digits" in text and "round(v * 255 / 16)" in text
    for name, value in {**HYPERPARAMETERS, "note": "a\\|b"}.items():
        assert f"| `{name}` | {value} |" in text, name
    for name, value in {"loss_encoder": "1.23457", "loss_decoder": "-0.5", "kl_real": "12", "c": "1"}.items():
        assert f"| `{name}` | {value} |" in text, name
    assert "![Samples from the prior](samples.png)" in text
    assert "{{" not in text and "{%" not in text


def test_model_card_hub_dataset_local_dataset_and_no_grid(tmp_path):
    create_model_card(str(tmp_path / "a"), repo_id="me/x", hyperparameters={"seed": 0}, final_losses={},
                      dataset_name="uoft-cs/cifar10", sample_grid=None, objective="soft-introvae")
    card = ModelCard.load(tmp_path / "a" / "README.md")
    assert card.data.datasets == ["uoft-cs/cifar10"] and "soft-introvae" in card.data.tags
    assert "https://huggingface.co/datasets/uoft-cs/cifar10" in card.text and "Soft-IntroVAE" in card.text
    assert "![" not in card.text and "No loss terms were logged." in card.text

    local = tmp_path / "home" / "user" / "my_faces"
    local.mkdir(parents=True)
    create_model_card(str(tmp_path / "b"), repo_id="me/y", hyperparameters={"seed": 0}, final_losses=None,
                      dataset_name=str(local), sample_grid=None, objective="vae")
    card = ModelCard.load(tmp_path / "b" / "README.md")
    assert card.data.datasets is None and "`my_faces`" in card.text and str(local) not in card.text


# ---- upload -------------------------------------------------------------------------------------------------


def fake_hub(monkeypatch):
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def fake_upload_folder(*, repo_id, folder_path, ignore_patterns=None, **kwargs):
        # What upload_folder does: every file under the folder, filtered by the patterns plus its own defaults.
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
        patterns = list(ignore_patterns) + huggingface_hub.utils.DEFAULT_IGNORE_PATTERNS
        calls["upload_folder"] = dict(repo_id=repo_id, folder_path=folder_path, ignore_patterns=list(ignore_patterns),
                                      uploaded=list(filter_repo_objects(files, ignore_patterns=patterns)), **kwargs)

    monkeypatch.setattr(hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(hub, "upload_folder", fake_upload_folder)
    return calls


def test_push_to_hub_uploads_the_pipeline_without_checkpoints_or_logs(tmp_path, monkeypatch):
    calls = fake_hub(monkeypatch)
    out = make_output_dir(tmp_path / "run")
    url = push_to_hub(str(out), "someone/digits", token="hf_secret", private=True)
    assert url == "https://huggingface.co/someone/digits"
    repo_id, kwargs = calls["create_repo"]
    assert repo_id == "someone/digits"
    assert kwargs["private"] is True and kwargs["token"] == "hf_secret" and kwargs["exist_ok"] is True
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "someone/digits" and upload["token"] == "hf_secret"
    assert Path(upload["folder_path"]) == out
    assert upload["uploaded"] == PIPELINE_FILES
    assert files_to_upload(str(out)) == PIPELINE_FILES
    assert set(hub.HUB_IGNORE_PATTERNS) <= set(upload["ignore_patterns"])

    push_to_hub(str(out), "someone/digits", ignore_patterns=[*hub.HUB_IGNORE_PATTERNS, "*.png"])
    assert calls["create_repo"][1]["private"] is False and calls["create_repo"][1]["token"] is None
    assert calls["upload_folder"]["uploaded"] == [f for f in PIPELINE_FILES if not f.endswith(".png")]
    assert files_to_upload(str(out), [*hub.HUB_IGNORE_PATTERNS, "*.png"]) == calls["upload_folder"]["uploaded"]


def test_push_to_hub_missing_folder(tmp_path, monkeypatch):
    fake_hub(monkeypatch)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        push_to_hub(str(tmp_path / "missing"), "someone/x")


def test_push_to_hub_offline_fails_clearly_and_quickly(tmp_path):
    out = make_output_dir(tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(HubError) as info:  # the real create_repo / upload_folder: offline mode stops the request
        push_to_hub(str(out), "someone/x", token="hf_secret")
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in message
    assert "'someone/x'" in message and "HF_HUB_OFFLINE" in message and "--hub_token" in message
    assert "network" in message and "hf_secret" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained deep traceback


def test_push_to_hub_offline_from_the_environment_in_a_fresh_process(tmp_path):
    """`HF_HUB_OFFLINE=1` set before start, as a user would, with nothing patched."""
    out = make_output_dir(tmp_path / "run")
    code = ("import sys; from asintrovae_hf.hub import push_to_hub, HubError\n"
            "try:\n    push_to_hub(sys.argv[1], 'someone/x')\n"
            "except HubError as err:\n    print(err); sys.exit(3)\n")
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "PYTHONPATH": ":".join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "'someone/x'" in result.stdout and "offline mode" in result.stdout


def http_error(status):
    httpx2 = pytest.importorskip("httpx2")  # huggingface_hub's HTTP library from 1.x on (httpx2 in 2.x)
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


def connect_error():
    return pytest.importorskip("httpx2").ConnectError("[Errno 111] Connection refused")


@pytest.mark.parametrize(
    "make_error, expected",
    [
        (lambda: OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled."), "offline mode"),
        (connect_error, "cannot reach the Hub (ConnectError"),
        (lambda: ConnectionError("Network is unreachable"), "cannot reach the Hub (ConnectionError"),
        (lambda: http_error(401), "refused the credentials (HTTP 401)"),
        (lambda: http_error(403), "refused the credentials (HTTP 403)"),
        (lambda: http_error(500), "HTTP 500"),
    ],
    ids=["offline", "httpx", "connection", "401", "403", "500"],
)
@pytest.mark.parametrize("failing", ["create_repo", "upload_folder"])
def test_hub_failures_become_one_clear_line(tmp_path, monkeypatch, make_error, expected, failing):
    fake_hub(monkeypatch)
    error = make_error()

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(hub, failing, fail)
    with pytest.raises(HubError) as info:
        push_to_hub(str(make_output_dir(tmp_path / "run")), "someone/x")
    message = str(info.value)
    assert expected in message and "'someone/x'" in message and "\n" not in message
    assert "hf auth login" in message and "--hub_token" in message
    assert ("Could not create" if failing == "create_repo" else "Could not upload to") in message


def test_requests_connection_errors_are_caught(tmp_path, monkeypatch):
    requests = pytest.importorskip("requests")
    fake_hub(monkeypatch)

    def fail(*args, **kwargs):
        raise requests.exceptions.ConnectTimeout("timed out")

    monkeypatch.setattr(hub, "create_repo", fail)
    with pytest.raises(HubError, match="cannot reach the Hub"):
        hub.ensure_repo("someone/x")


def test_invalid_repo_id_is_a_hub_error():
    with pytest.raises(HubError, match="invalid repo id"):
        hub.ensure_repo("not a/valid/repo id")
