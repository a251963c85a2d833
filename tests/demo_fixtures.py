"""The demo served in subprocesses (`scripts/demo.py`) for tests/demo/test_demo_api.py and tests/demo/test_demo_browser.py.

Two tiny saved pipelines, one unconditional (16x16, with reference scores of 200 built-in digits saved next to it)
and one class-conditional (8x8, 3 classes, without them), each served once per test session on a free port of
127.0.0.1. The servers run with Gradio's analytics (and so its version check) off, offline for the Hub, and with
proxies that send anything not addressed to 127.0.0.1 to a closed port.

ASINTROVAE_DEMO_PIPELINE=FOLDER serves a copy of that saved pipeline (e.g. a trained one, for the README's
screenshots) instead of the tiny unconditional one; the tests compare the page with whichever pipeline is served.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, tiny_conditional_pipeline, tiny_image_pipeline

REFERENCE_COUNT = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_env(tmp: Path, **extra) -> dict:
    """The environment of a demo subprocess."""
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        env.pop(key, None)  # lowercase proxies would win over ours
    env.update(
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        GRADIO_ANALYTICS_ENABLED="False",  # no telemetry, and no version check (Gradio ties it to analytics)
        GRADIO_TEMP_DIR=str(tmp / "gradio"), GRADIO_SERVER_NAME="127.0.0.1",
        HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
        HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@dataclass
class DemoServer:
    process: subprocess.Popen
    url: str
    log: Path
    folder: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start_server(command, env, log: Path, folder: Path, port: int) -> DemoServer:
    """Start `command` (which serves on `port`) with its output in `log`; does not wait."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))
    return DemoServer(process, f"http://127.0.0.1:{port}", log, folder)


def wait_until_served(server: DemoServer, timeout: float = 300) -> None:
    """Poll the page until it answers 200; fail with the server's output if it exits or never answers."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the demo server exited with status {server.process.returncode}:\n{server.log_tail()}")
        try:
            with opener.open(server.url + "/", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"the demo server did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def require_gradio() -> None:
    """Skip without gradio (or fail where ASINTROVAE_REQUIRE_BROWSER=1: CI must run these tests)."""
    import importlib.util

    missing = [m for m in ("gradio", "gradio_client") if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (pip install -e '.[test]')"
        if os.environ.get("ASINTROVAE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ASINTROVAE_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)


@pytest.fixture(scope="session")
def demo_folders(tmp_path_factory):
    """{"unconditional": folder, "conditional": folder}: saved pipelines; the first with reference scores."""
    from asintrovae_hf import AsIntroVAEPipeline
    from asintrovae_hf.demo import save_reference_scores
    from asintrovae_hf.evaluation.ood import digits_images

    base = tmp_path_factory.mktemp("demo_pipelines")
    folders = {"unconditional": base / "unconditional", "conditional": base / "conditional"}
    given = os.environ.get("ASINTROVAE_DEMO_PIPELINE")
    if given:  # a copy, under the given folder's name (the page's title)
        folders["unconditional"] = base / Path(given).resolve().name
        shutil.copytree(given, folders["unconditional"], ignore=shutil.ignore_patterns("checkpoint-*", "logs"))
        unconditional = AsIntroVAEPipeline.from_pretrained(folders["unconditional"])
    else:
        unconditional = tiny_image_pipeline()
        unconditional.save_pretrained(folders["unconditional"])
    tiny_conditional_pipeline().save_pretrained(folders["conditional"])
    if unconditional.num_classes:
        pytest.fail("ASINTROVAE_DEMO_PIPELINE must be an unconditional pipeline")
    unconditional.set_progress_bar_config(disable=True)
    save_reference_scores(unconditional, digits_images()[:REFERENCE_COUNT], folders["unconditional"],
                          source=f"the first {REFERENCE_COUNT} built-in digits")
    return folders


@pytest.fixture(scope="session")
def demo_servers(demo_folders, tmp_path_factory):
    """{"unconditional": DemoServer, "conditional": DemoServer}: `scripts/demo.py` serving each folder."""
    require_gradio()
    tmp = tmp_path_factory.mktemp("demo_servers")
    servers = {}
    try:
        for name, folder in demo_folders.items():
            port = free_port()
            command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--pipeline", str(folder), "--port",
                       str(port)]
            servers[name] = start_server(command, demo_env(tmp), tmp / f"{name}.log", folder, port)
        for server in servers.values():  # both start at once; wait for each
            wait_until_served(server)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def demo_pipes(demo_folders):
    """The demo servers' pipelines, loaded in the test process (progress bars off), to compare the pages with."""
    from asintrovae_hf import AsIntroVAEPipeline

    pipes = {name: AsIntroVAEPipeline.from_pretrained(folder) for name, folder in demo_folders.items()}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes
