"""The Hub story end to end, through the local fake Hub (tests/fake_hub.py, whose control test pushes and loads a stock
diffusers pipeline): train with `--push_to_hub`, then load by repo id in fresh processes with empty caches, with the
plugin and without it (`trust_remote_code`), at a revision, offline from the cache, and with a token."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from helpers import NO_PLUGIN, TINY, TRAIN_SCRIPT as SCRIPT


# One fresh interpreter, one load per line of JSON on stdin: {"code": "...", "out": path, "unset": [...]}. The code
# builds `pipe`; the script samples 3 images with seed 7 and saves them, or reports the error.
LOADER = r"""
import json, os, sys
import numpy as np, torch
torch.set_num_threads(1)
for line in sys.stdin:
    step = json.loads(line)
    for name in step.get("unset", []):
        os.environ.pop(name, None)
    try:
        scope = {"torch": torch}
        exec(step["code"], scope)
        pipe = scope["pipe"]
        out = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np").images
        np.save(step["out"], out)
        report = {"ok": True, "class": type(pipe).__module__ + "." + type(pipe).__name__}
    except Exception as err:
        report = {"ok": False, "error": type(err).__name__, "message": " ".join(str(err).split())[:500]}
    print("REPORT " + json.dumps(report), flush=True)
"""


def run_loader(fake_hub, steps, prefix="", **env):
    script = prefix + LOADER
    result = subprocess.run([sys.executable, "-c", script], input="".join(json.dumps(s) + "\n" for s in steps),
                            env=fake_hub.subprocess_env(OMP_NUM_THREADS="1", **env), capture_output=True, text=True,
                            timeout=600)
    reports = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == len(steps), result.stderr[-3000:]
    return reports


@pytest.fixture
def pushed(fake_hub, tmp_path):
    """The training script run with --push_to_hub against the fake Hub; a bare name, so the Hub fills in the user."""
    out = tmp_path / "run"
    env = fake_hub.subprocess_env(OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--output_dir", str(out), "--max_train_steps", "2",
                             "--checkpointing_steps", "1", "--push_to_hub", "--hub_model_id", "digits-x"],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    local = AsIntroVAEPipeline.from_pretrained(out)
    expected = local(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np").images
    np.save(tmp_path / "expected.npy", expected)
    return out, expected


def test_train_push_and_load_by_id(fake_hub, pushed, tmp_path):
    """One training run pushed to the fake Hub; everything a stranger does with it afterwards."""
    out, expected = pushed
    repo = f"{fake_hub.user}/digits-x"
    files = fake_hub.list_files(repo)
    assert {"model_index.json", "pipeline_asintrovae.py", "README.md", "train_summary.json", "samples.png",
            "encoder/config.json", "encoder/diffusion_pytorch_model.safetensors",
            "encoder/modeling_asintrovae_encoder.py", "decoder/modeling_asintrovae_decoder.py"} <= set(files)
    assert not [f for f in files if f.startswith(("checkpoint-", "logs/"))]
    # weights went through the LFS path of the fake (a broken binary path cannot pass unnoticed)
    assert any(c.startswith("PUT /upload/") for c in fake_hub.calls("cdn"))
    # no local path in anything uploaded
    for name in files:
        text = fake_hub.read_file(repo, name).decode("utf-8", errors="replace")
        assert str(tmp_path) not in text and str(Path.home()) + "/" not in text, name
    card = fake_hub.read_file(repo, "README.md").decode()
    assert f'AsIntroVAEPipeline.from_pretrained("{repo}")' in card and "pip install asintrovae-hf" in card
    assert "trust_remote_code=True" in card and "arxiv.org/abs/2206.13903" in card
    assert "library_name: diffusers" in card

    sha = fake_hub.commit_sha(repo)
    with_plugin = run_loader(fake_hub, [
        {"code": f"from asintrovae_hf import AsIntroVAEPipeline\npipe = AsIntroVAEPipeline.from_pretrained({repo!r})",
         "out": str(tmp_path / "a.npy")},
        {"code": "from asintrovae_hf import AsIntroVAEPipeline\n"
                 f"pipe = AsIntroVAEPipeline.from_pretrained({repo!r}, revision={sha!r}, "
                 f"cache_dir={str(tmp_path / 'cache2')!r}, torch_dtype=torch.float32)",
         "out": str(tmp_path / "b.npy")},
        {"code": "from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline\n"
                 f"pipe = AsIntroVAEPipeline(encoder=AsIntroVAEEncoder.from_pretrained({repo!r}, subfolder='encoder'),"
                 f" decoder=AsIntroVAEDecoder.from_pretrained({repo!r}, subfolder='decoder'))",
         "out": str(tmp_path / "c.npy")},
    ])
    assert all(r["ok"] for r in with_plugin), with_plugin
    assert with_plugin[0]["class"] == "asintrovae_hf.pipelines.pipeline_asintrovae.AsIntroVAEPipeline"
    for name in "abc":
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), expected)
    assert os.listdir(tmp_path / "cache2")  # cache_dir reached the download

    without_plugin = run_loader(fake_hub, [
        {"code": f"from diffusers import DiffusionPipeline\npipe = DiffusionPipeline.from_pretrained({repo!r})",
         "out": str(tmp_path / "x.npy")},
        {"code": "from diffusers import DiffusionPipeline\n"
                 f"pipe = DiffusionPipeline.from_pretrained({repo!r}, trust_remote_code=True)",
         "out": str(tmp_path / "d.npy")},
    ], prefix=NO_PLUGIN, HF_MODULES_CACHE=str(tmp_path / "modules"))
    assert not without_plugin[0]["ok"] and "trust_remote_code" in without_plugin[0]["message"]
    assert without_plugin[1]["ok"] and "asintrovae_hf" not in without_plugin[1]["class"], without_plugin
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected)

    check_offline_cache_local_files_only_and_token(fake_hub, repo, expected, tmp_path)
    check_the_model_cards_usage_snippet(out)


def check_offline_cache_local_files_only_and_token(fake_hub, repo, expected, tmp_path):
    code = f"from asintrovae_hf import AsIntroVAEPipeline\npipe = AsIntroVAEPipeline.from_pretrained({repo!r}{{}})"
    empty_cache = str(tmp_path / "empty-cache")
    empty = run_loader(fake_hub, [{"code": code.format(f", local_files_only=True, cache_dir={empty_cache!r}"),
                                   "out": str(tmp_path / "e.npy")}])
    assert not empty[0]["ok"] and empty[0]["error"] in ("OSError", "EnvironmentError", "LocalEntryNotFoundError")
    fake_hub.clear_log()  # the default cache holds the repo since the first load above
    offline = run_loader(fake_hub, [{"code": code.format(""), "out": str(tmp_path / "g.npy")}], HF_HUB_OFFLINE="1")
    assert offline[0]["ok"], offline
    assert fake_hub.calls() == []  # served from the cache alone
    np.testing.assert_array_equal(np.load(tmp_path / "g.npy"), expected)

    fake_hub.require_token = True
    cache = str(tmp_path / "cache3")
    no_token = run_loader(fake_hub, [{"code": code.format(f", cache_dir={cache!r}"), "out": str(tmp_path / "h.npy"),
                                      "unset": ["HF_TOKEN"]}])
    assert not no_token[0]["ok"]
    token = run_loader(fake_hub, [{"code": code.format(f", cache_dir={cache!r}, token={fake_hub.token!r}"),
                                   "out": str(tmp_path / "i.npy"), "unset": ["HF_TOKEN"]}])
    assert token[0]["ok"], token
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), expected)


def check_the_model_cards_usage_snippet(out):
    """The card's Python snippet, run against the saved folder in place of the repo id."""
    card = (out / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    snippet = next(b for b in blocks if "AsIntroVAEPipeline.from_pretrained" in b)
    repo_id = re.search(r'from_pretrained\("([^"]+)"\)', snippet).group(1)
    assert repo_id.endswith("/digits-x")  # the id create_repo returned, namespace included
    scope = {}
    exec(snippet.replace(repo_id, str(out)), scope)
    assert len(scope["images"]) == 16 and len(scope["reconstructions"]) == 16


def test_save_pretrained_push_to_hub(fake_hub, tmp_path):
    torch.manual_seed(0)
    kw = dict(sample_size=8, latent_dim=4, block_out_channels=(8,))
    pipe = AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw), decoder=AsIntroVAEDecoder(out_channels=1, **kw))
    pipe.save_pretrained(tmp_path / "p", push_to_hub=True, repo_id="pushed-directly")
    files = fake_hub.list_files(f"{fake_hub.user}/pushed-directly")
    assert "pipeline_asintrovae.py" in files and "decoder/modeling_asintrovae_decoder.py" in files
    index = json.loads(fake_hub.read_file(f"{fake_hub.user}/pushed-directly", "model_index.json"))
    assert index["_class_name"] == ["pipeline_asintrovae", "AsIntroVAEPipeline"]
