"""Control test for the fake Hub (tests/fake_hub.py): the real `huggingface_hub` and `diffusers` clients push a stock
DDPMPipeline to it and load it back by repo id, in a fresh process with an empty cache. If this file fails, the fake
(not the plugin) is what needs fixing before any Hub test built on it means anything."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from fake_hub import git_blob_sha1

REPO = "acme/ddpm-tiny"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
PIPELINE_FILES = [".gitattributes", "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", WEIGHTS]

# A fresh interpreter that loads the pipeline by id, one step per stdin line, so that the test can change the fake's
# mode between steps. Each step: the class, from_pretrained kwargs, variables to drop from os.environ first (the
# token is looked up at call time), and where to save the sampled image. It answers one "REPORT {json}" line per step.
LOADER = r"""
import json, os, sys
import numpy as np, torch
torch.set_num_threads(1)
import diffusers
for line in sys.stdin:
    step = json.loads(line)
    for name in step["unset_env"]:
        os.environ.pop(name, None)
    try:
        pipe = getattr(diffusers, step["cls"]).from_pretrained(step["repo"], **step["kwargs"])
        pipe.set_progress_bar_config(disable=True)
        out = pipe(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=2, output_type="np")
        np.save(step["out"], out.images)
        report = {"ok": True, "class": type(pipe).__name__}
    except Exception as e:
        chain, x = [], e
        while x is not None:
            chain.append(type(x).__name__)
            x = x.__cause__ or x.__context__
        report = {"ok": False, "errors": chain, "message": str(e)}
    print("REPORT " + json.dumps(report), flush=True)
"""


class Loader:
    """`LOADER` in a fresh interpreter, with the fake's environment (plus ``env``; None drops a variable)."""

    def __init__(self, fake_hub, tmp_path: Path, **env):
        self.tmp_path, self.steps = tmp_path, 0
        self.stderr = open(tmp_path / f"loader-{id(self)}.err", "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", LOADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True,
                                     env=fake_hub.subprocess_env(OMP_NUM_THREADS="1", **env))

    def load(self, cls: str, unset_env: tuple = (), **kwargs) -> tuple[dict, np.ndarray | None]:
        self.steps += 1
        out = self.tmp_path / f"image-{id(self)}-{self.steps}.npy"
        step = {"repo": REPO, "cls": cls, "kwargs": kwargs, "unset_env": list(unset_env), "out": str(out)}
        self.proc.stdin.write(json.dumps(step) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("REPORT "):
                return json.loads(line[len("REPORT "):]), (np.load(out) if out.exists() else None)
        self.stderr.seek(0)
        raise AssertionError(f"the loader died:\n{self.stderr.read()[-4000:]}")

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


def tiny_pipeline(seed: int):
    import torch  # here, not at the top: the protocol tests below need neither torch nor diffusers
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe) -> np.ndarray:
    import torch

    from asintrovae_hf.process_settings import torch_threads

    with torch_threads(1):  # as the fresh processes that load the pipeline sample
        out = pipe(batch_size=1, generator=torch.Generator().manual_seed(0), num_inference_steps=2, output_type="np")
    return out.images


def assert_same_image(loaded: np.ndarray, local: np.ndarray) -> None:
    """Same weights, same generator: equal up to float noise between processes (the pipelines differ by > 1e-3)."""
    np.testing.assert_allclose(loaded, local, rtol=0, atol=1e-6)


def push_two_revisions(pipe_a, pipe_b, tmp_path) -> tuple[str, str]:
    """``pipe_a`` with create_repo + upload_folder, then ``pipe_b`` on top with push_to_hub. Returns both shas."""
    api = HfApi()
    assert api.create_repo("ddpm-tiny", exist_ok=True).repo_id == REPO  # the namespace comes from the token's user
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO  # exists already: fine with exist_ok
    pipe_a.save_pretrained(tmp_path / "a")
    sha_a = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "a", commit_message="pipeline a").oid
    pipe_b.push_to_hub(REPO)
    sha_b = api.model_info(REPO).sha
    assert len({sha_a, sha_b}) == 2 and all(len(s) == 40 for s in (sha_a, sha_b))
    return sha_a, sha_b


# ---- the control: push with the real clients, load by id in a fresh process ------------------------------------


@pytest.mark.slow
def test_push_then_load_by_id_in_fresh_process(fake_hub, tmp_path):
    pipe_a, pipe_b = tiny_pipeline(0), tiny_pipeline(1)
    image_a, image_b = sample(pipe_a), sample(pipe_b)
    assert image_a.shape == (1, 8, 8, 1) and np.abs(image_a - image_b).max() > 1e-3
    sha_a, sha_b = push_two_revisions(pipe_a, pipe_b, tmp_path)

    # What the fake holds, per revision; the weights went through the LFS batch API and the CDN, not inline.
    assert fake_hub.list_files(REPO, sha_a) == PIPELINE_FILES
    assert fake_hub.list_files(REPO) == sorted(PIPELINE_FILES + ["README.md"])
    assert fake_hub.read_file(REPO, WEIGHTS, sha_a) == (tmp_path / "a" / WEIGHTS).read_bytes()
    oid_a, oid_b = (hashlib.sha256(fake_hub.read_file(REPO, WEIGHTS, sha)).hexdigest() for sha in (sha_a, sha_b))
    assert fake_hub.calls().count(f"POST /{REPO}.git/info/lfs/objects/batch") == 2
    assert fake_hub.calls().count(f"POST /{REPO}.git/info/lfs/objects/verify") == 2
    assert fake_hub.calls("cdn") == [f"PUT /upload/{oid_a}", f"PUT /upload/{oid_b}"]
    siblings = {s.rfilename: s for s in HfApi().model_info(REPO, files_metadata=True).siblings}
    assert siblings[WEIGHTS].lfs.sha256 == oid_b and siblings["unet/config.json"].lfs is None

    # A fresh interpreter (it spends ~10 s importing torch and diffusers here), with an empty HF_HUB_CACHE.
    fake_hub.clear_log()
    with Loader(fake_hub, tmp_path) as online:
        # main, by id, with the token from HF_TOKEN
        report, main_image = online.load("DDPMPipeline")
        assert report == {"ok": True, "class": "DDPMPipeline"}
        assert_same_image(main_image, image_b)
        # the first commit, by sha, through DiffusionPipeline, into another empty cache
        report, image = online.load("DiffusionPipeline", revision=sha_a, cache_dir=str(tmp_path / "c2"))
        assert report == {"ok": True, "class": "DDPMPipeline"}
        assert_same_image(image, image_a)
        # local_files_only with an empty cache: a clear error, and no request
        n = len(fake_hub.requests)
        report, _ = online.load("DDPMPipeline", local_files_only=True, cache_dir=str(tmp_path / "c3"))
        assert not report["ok"] and "LocalEntryNotFoundError" in report["errors"], report
        assert "local_files_only" in report["message"] and len(fake_hub.requests) == n

        # What went over the wire: HEAD/GET resolve with the token, the weights redirected to the CDN and fetched
        # there by sha256 without the token; the cache's blobs are named by ETag (sha256 for LFS, git sha1 otherwise).
        assert f"HEAD /{REPO}/resolve/{sha_a}/{WEIGHTS}" in fake_hub.calls()
        assert sorted(set(fake_hub.calls("cdn"))) == sorted({f"GET /lfs/{oid_a}", f"GET /lfs/{oid_b}"})
        assert not any(r.auth_header for r in fake_hub.requests if r.server == "cdn")
        assert all(r.token for r in fake_hub.requests if r.server == "hub")
        blobs = sorted(p.name for p in (fake_hub.cache / "models--acme--ddpm-tiny" / "blobs").iterdir())
        configs = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json")
        assert blobs == sorted({oid_b} | {git_blob_sha1(fake_hub.read_file(REPO, f)) for f in configs})

        # Require-token mode: without a token (HF_TOKEN dropped, no token file) loading fails; token= works.
        fake_hub.require_token = True
        fake_hub.clear_log()
        report, _ = online.load("DDPMPipeline", unset_env=("HF_TOKEN",), cache_dir=str(tmp_path / "c4"))
        assert not report["ok"] and "RepositoryNotFoundError" in report["errors"], report
        assert fake_hub.requests and {(r.token, r.status) for r in fake_hub.requests} == {(False, 401)}
        fake_hub.clear_log()
        report, image = online.load("DiffusionPipeline", token=fake_hub.token, cache_dir=str(tmp_path / "c5"))
        assert report == {"ok": True, "class": "DDPMPipeline"}
        assert_same_image(image, image_b)
        # token= reached every hub request (none fell back to "no token" and a 401)
        assert {(r.token, r.status) for r in fake_hub.requests if r.server == "hub"} <= {(True, 200), (True, 302)}
        fake_hub.require_token = False

    # Offline, in another fresh interpreter, from the cache the first one filled: the same image, bit for bit,
    # and not one request.
    fake_hub.clear_log()
    with Loader(fake_hub, tmp_path, HF_HUB_OFFLINE="1") as offline:
        report, image = offline.load("DDPMPipeline")
    assert report["ok"], report
    np.testing.assert_array_equal(image, main_image)
    assert fake_hub.requests == []


# ---- huggingface_hub in process: the protocol pieces one by one ---------------------------------------------------


def test_repo_api_download_and_revisions(fake_hub):
    api = HfApi()
    assert api.whoami()["name"] == "acme"
    assert api.create_repo("files").repo_id == "acme/files"
    text, binary = b'{"a": 1}\n', bytes(range(256)) * 4
    c1 = api.create_commit("acme/files", [CommitOperationAdd("config.json", text),
                                          CommitOperationAdd("sub/w.bin", binary)], commit_message="one").oid
    c2 = api.create_commit("acme/files", [CommitOperationAdd("config.json", b"{}\n")], commit_message="two").oid
    api.create_branch("acme/files", branch="dev", revision=c1)
    c3 = api.create_commit("acme/files", [CommitOperationAdd("dev.txt", b"dev")], commit_message="three",
                           revision="dev").oid

    assert api.model_info("acme/files").sha == c2 and api.model_info("acme/files", revision="dev").sha == c3
    assert api.list_repo_files("acme/files", revision=c1) == [".gitattributes", "config.json", "sub/w.bin"]
    assert fake_hub.list_files("acme/files", "dev") == [".gitattributes", "config.json", "dev.txt", "sub/w.bin"]
    assert read(hf_hub_download("acme/files", "config.json")) == b"{}\n"
    assert read(hf_hub_download("acme/files", "config.json", revision=c1)) == text
    assert read(hf_hub_download("acme/files", "config.json", revision="dev")) == text
    path = hf_hub_download("acme/files", "sub/w.bin", revision=c1)
    assert read(path) == binary and Path(path).resolve().name == hashlib.sha256(binary).hexdigest()
    assert Path(hf_hub_download("acme/files", "config.json")).resolve().name == git_blob_sha1(b"{}\n")
    folder = Path(snapshot_download("acme/files", revision="dev"))
    assert folder.name == c3 and read(folder / "dev.txt") == b"dev" and read(folder / "sub/w.bin") == binary
    assert fake_hub.calls("cdn").count(f"PUT /upload/{hashlib.sha256(binary).hexdigest()}") == 1

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/files", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/files", "config.json", revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nothing")
    assert fake_hub.unhandled == []


def test_require_token_mode_in_process(fake_hub):
    HfApi().create_repo("private-ish")
    fake_hub.require_token = True
    assert HfApi().model_info("acme/private-ish").sha  # HF_TOKEN is set by the fixture
    with pytest.raises(RepositoryNotFoundError) as e:
        HfApi(token=False).model_info("acme/private-ish")
    assert e.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/private-ish", ".gitattributes", token=False)
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(token="hf_wrong").model_info("acme/private-ish")
    assert e.value.response.status_code == 401
    assert read(hf_hub_download("acme/private-ish", ".gitattributes", token=fake_hub.token)).startswith(b"*.bin")


def test_broken_lfs_paths_are_refused(fake_hub):
    """The fake refuses broken LFS commits and uploads, so a client-side LFS bug cannot pass silently."""
    HfApi().create_repo("lfs")
    session, auth = get_session(), {"authorization": f"Bearer {fake_hub.token}"}
    data = b"\0binary" * 10
    oid = hashlib.sha256(data).hexdigest()
    # A commit naming an LFS object that was never uploaded.
    payload = [{"key": "header", "value": {"summary": "x"}},
               {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}]
    r = session.post(f"{fake_hub.url}/api/models/acme/lfs/commit/main", headers=auth,
                     content=b"".join(json.dumps(x).encode() + b"\n" for x in payload))
    assert r.status_code == 422
    # The batch API hands out a signed upload URL; the CDN refuses other content, and a forged signature.
    r = session.post(f"{fake_hub.url}/acme/lfs.git/info/lfs/objects/batch", headers=auth,
                     json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]})
    href = r.json()["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(fake_hub.cdn_url)
    assert session.put(href, content=data[::-1]).status_code == 400
    assert session.put(href.replace("sig=", "sig=0"), content=data).status_code == 403
    assert session.put(href, content=data).status_code == 200
    assert session.post(f"{fake_hub.url}/acme/lfs.git/info/lfs/objects/verify", headers=auth,
                        json={"oid": oid, "size": len(data)}).status_code == 200
    # Writes need the token even outside require-token mode.
    assert session.post(f"{fake_hub.url}/api/models/acme/lfs/preupload/main", json={"files": []}).status_code == 401


def test_xet_uploads_need_to_be_disabled(fake_hub, tmp_path, monkeypatch):
    """Why the fixture sets HF_HUB_DISABLE_XET=1: with `hf_xet` installed, huggingface_hub 2.4 uploads through Xet
    without asking the server first, and the fake has no xet-write-token route, so the upload fails at once (and
    does not fall back to LFS). Without `hf_xet`, the same upload takes the LFS path whatever the variable says."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    HfApi().create_repo("xet")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "w.safetensors").write_bytes(b"\0" * 100)
    if importlib.util.find_spec("hf_xet") is not None:
        with pytest.raises(Exception, match="xet-write-token"):
            HfApi().upload_folder(repo_id="acme/xet", folder_path=tmp_path / "f")
        assert [r.path for r in fake_hub.unhandled] == ["/api/models/acme/xet/xet-write-token/main"]
        fake_hub.clear_log()
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    HfApi().upload_folder(repo_id="acme/xet", folder_path=tmp_path / "f")
    assert fake_hub.list_files("acme/xet") == [".gitattributes", "w.safetensors"]
    assert "POST /acme/xet.git/info/lfs/objects/batch" in fake_hub.calls() and fake_hub.unhandled == []


def read(path) -> bytes:
    return Path(path).read_bytes()
