"""scripts/push_space.py against the local fake Hub (tests/fake_hub.py): the Space's files arrive, the model card links
the Space, and the uploaded app.py, run in a fresh process, serves the demo of the model it downloads from the Hub."""

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

from asintrovae_hf.hub import create_model_card, link_space_in_card, push_to_hub, space_link
from demo_fixtures import DemoServer, demo_env, free_port, require_gradio, wait_until_served
from helpers import load_script, tiny_image_pipeline

pytestmark = pytest.mark.slow


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_model_card_links_a_space(tmp_path):
    card = create_model_card(str(tmp_path), "acme/m", {"lr": 1e-4}, space_id="acme/m-demo").text
    lines = card.strip().split("\n")
    assert lines[0] == "# acme/m" and lines[2] == space_link("acme/m-demo")
    assert "https://huggingface.co/spaces/acme/m-demo" in lines[2]
    without = create_model_card(str(tmp_path / "b"), "acme/m", {"lr": 1e-4}).text
    assert "huggingface.co/spaces" not in without
    assert without == card.replace(space_link("acme/m-demo") + "\n\n", "")


def test_write_space_files(tmp_path):
    script = load_script("push_space")
    names = script.write_space(str(tmp_path), "acme/m", "acme/m-demo", requirement="asintrovae-hf[demo]==9.9")
    assert names == ["README.md", "app.py", "requirements.txt"]
    meta = front_matter((tmp_path / "README.md").read_text())
    import gradio

    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert meta["app_file"] == "app.py" and meta["models"] == ["acme/m"]
    assert (tmp_path / "requirements.txt").read_text() == "asintrovae-hf[demo]==9.9\n"
    app = (tmp_path / "app.py").read_text()
    assert "AsIntroVAEPipeline.from_pretrained(MODEL_ID)" in app and "MODEL_ID = 'acme/m'" in app
    compile(app, "app.py", "exec")
    assert script.main(["--pipeline", "acme/m", "--space_id", "x", "--dry_run"]) == 1  # needs --output_dir


def test_push_space_and_run_its_app(fake_hub, tmp_path):
    require_gradio()
    model_id = f"{fake_hub.user}/tiny-demo"
    pipe = tiny_image_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    create_model_card(str(tmp_path / "model"), model_id, {"resolution": 16})
    push_to_hub(str(tmp_path / "model"), "tiny-demo")

    script = load_script("push_space")
    assert script.main(["--pipeline", model_id, "--space_id", "tiny-demo-space",
                        "--requirement", "asintrovae-hf[demo]"]) == 0
    space_id = f"{fake_hub.user}/tiny-demo-space"
    files = fake_hub.list_files(space_id, repo_type="space")
    assert {"app.py", "requirements.txt", "README.md"} <= set(files)
    meta = front_matter(fake_hub.read_file(space_id, "README.md", repo_type="space").decode())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [model_id]
    assert "POST /api/repos/create" in fake_hub.calls()

    card = fake_hub.read_file(model_id, "README.md").decode()
    assert space_link(space_id) in card and card.count("huggingface.co/spaces/") == 1
    assert card.index(f"# {model_id}") < card.index(space_link(space_id)) < card.index("## Usage")
    assert link_space_in_card(model_id, space_id) is False  # already linked: unchanged

    # the uploaded app.py, in a fresh process whose HF_ENDPOINT is the fake Hub, with an empty cache
    app_dir = tmp_path / "space"
    app_dir.mkdir()
    (app_dir / "app.py").write_bytes(fake_hub.read_file(space_id, "app.py", repo_type="space"))
    fake_hub.clear_log()
    port = free_port()
    env = demo_env(tmp_path, GRADIO_SERVER_PORT=str(port), HF_HUB_CACHE=str(tmp_path / "fresh-cache"))
    env.update({k: v for k, v in fake_hub.env.items() if k.startswith("HF_") and k != "HF_HUB_CACHE"})
    with open(tmp_path / "app.log", "w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    server = DemoServer(process, f"http://127.0.0.1:{port}", tmp_path / "app.log", app_dir)
    try:
        wait_until_served(server)
        assert any(c.startswith(f"GET /{model_id}/resolve/") or c.startswith(f"HEAD /{model_id}/resolve/")
                   for c in fake_hub.calls()), fake_hub.calls()
        from gradio_client import Client

        client = Client(server.url, verbose=False)
        gallery = client.predict(7, 1, 1.0, 0, api_name="/sample")
        expected = pipe(generator=torch.Generator().manual_seed(7)).images[0]
        np.testing.assert_array_equal(np.asarray(PIL.Image.open(gallery[0]["image"])), np.asarray(expected))
    finally:
        server.stop()
