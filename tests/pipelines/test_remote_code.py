"""The code a saved pipeline ships (`pipelines/remote_code.py`): one self-contained bundle for the pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.pipelines import remote_code
from helpers import NO_PLUGIN, tiny_image_pipeline


def run_without_plugin(script: str, tmp_path) -> None:
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", NO_PLUGIN + script], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


def test_the_bundle_imports_alone_and_gives_the_packages_numbers(tmp_path):
    """The bundle, imported as a plain file where `asintrovae_hf` cannot be imported, samples and scores bit for bit
    as the package's pipeline."""
    pipe = tiny_image_pipeline(channels=3)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "pipeline_asintrovae.py").write_text(remote_code.bundle_source())
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    np.save(tmp_path / "samples.npy", pipe(batch_size=3, generator=torch.Generator().manual_seed(7),
                                            output_type="np").images)
    for iw in (False, True):
        torch.save(pipe.score(x, num_samples=3, importance_weighted=iw, batch_size=2,
                              generator=torch.Generator().manual_seed(1)).neg_elbo, tmp_path / f"score{iw}.pt")
    run_without_plugin(f"""
import importlib.util, sys
import numpy as np, torch
folder, alone = {str(tmp_path / 'pipe')!r}, {str(tmp_path / 'alone')!r}
sys.path.insert(0, alone)
import pipeline_asintrovae as bundle
def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
models = load(folder + "/encoder/modeling_asintrovae_encoder.py", "models")
assert bundle._plugin_models() is None and not any(m.split(".")[0] == "asintrovae_hf" for m in sys.modules)
pipe = bundle.AsIntroVAEPipeline(encoder=models.AsIntroVAEEncoder.from_pretrained(folder + "/encoder"),
                                 decoder=models.AsIntroVAEDecoder.from_pretrained(folder + "/decoder"))
pipe.set_progress_bar_config(disable=True)
out = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), output_type="np").images
np.testing.assert_array_equal(out, np.load({str(tmp_path / 'samples.npy')!r}))
x = torch.load({str(tmp_path / 'x.pt')!r})
for iw in (False, True):
    score = pipe.score(x, num_samples=3, importance_weighted=iw, batch_size=2,
                       generator=torch.Generator().manual_seed(1)).neg_elbo
    assert torch.equal(score, torch.load({str(tmp_path)!r} + f"/score{{iw}}.pt")), iw
print("OK")
""", tmp_path)


def test_a_pipeline_loaded_as_remote_code_saves_itself_again(tmp_path):
    """Re-saving a pipeline loaded with `trust_remote_code=True` without the plugin ships the same code (the bundle,
    header included), and the folder loads again, with and without the plugin, to the same samples."""
    pipe = tiny_image_pipeline(channels=1)
    pipe.save_pretrained(tmp_path / "first")
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    run_without_plugin(f"""
import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({str(tmp_path / 'first')!r}, trust_remote_code=True)
assert "asintrovae_hf" not in type(pipe).__module__
pipe.save_pretrained({str(tmp_path / 'second')!r})
again = DiffusionPipeline.from_pretrained({str(tmp_path / 'second')!r}, trust_remote_code=True)
a = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="np").images
b = again(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="np").images
assert (a == b).all()
print("OK")
""", tmp_path)
    for path in ("pipeline_asintrovae.py", "encoder/modeling_asintrovae_encoder.py",
                 "decoder/modeling_asintrovae_decoder.py"):
        assert (tmp_path / "second" / path).read_text() == (tmp_path / "first" / path).read_text(), path
    index = json.loads((tmp_path / "second" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_asintrovae", "AsIntroVAEPipeline"]
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path / "second")
    np.testing.assert_array_equal(
        loaded(batch_size=2, generator=torch.Generator().manual_seed(3), output_type="np").images, expected)


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package `bundlecase` whose modules a test writes, importable for the test's duration."""
    root = tmp_path / "bundlecase"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, source):
        (root / f"{name}.py").write_text(source)
        sys.modules.pop(f"bundlecase.{name}", None)
        return f"bundlecase.{name}"

    yield write
    for name in [m for m in sys.modules if m.split(".")[0] == "bundlecase"]:
        del sys.modules[name]


def test_single_line_imports_of_earlier_modules_are_dropped(package):
    first = package("first", "import math\n\nTWO = 2.0\n")
    second = package("second", "from .first import TWO  # the constant\nimport torch\n\n\ndef four():\n"
                                "    return TWO * TWO\n")
    text = remote_code.bundle_source((first, second))
    assert text == (f"# Generated from the `{first}` and `{second}` modules when this pipeline was saved; the package "
                    "is the source, do not edit.\n" + "import math\n\nTWO = 2.0\n" + "\n\n"
                    + "import torch\n\n\ndef four():\n    return TWO * TWO\n")
    namespace = {}
    exec(compile(text, "bundle", "exec"), namespace)
    assert namespace["four"]() == 4.0


@pytest.mark.parametrize("source, message", [
    ("from asintrovae_hf.training import loop\n", "imports asintrovae_hf.training, which is not one of the modules "
                                                  "bundled before it"),
    ("from .elsewhere import thing\n", "imports bundlecase.elsewhere, which is not one of the modules bundled"),
    ("from .first import (\n    TWO,\n)\n", "must be one top-level line"),
    ("from .first import TWO as deux\n", "must be one top-level line"),
    ("def late():\n    from .first import TWO\n    return TWO\n", "must be one top-level line"),
    ("import asintrovae_hf.models\n", "imports asintrovae_hf.models"),
    ("import requests\n", "imports requests"),
    ("from accelerate import Accelerator\n", "imports accelerate"),
    ("TWO = 3.0\n", "defines TWO, which bundlecase.first defines too"),
])
def test_other_imports_are_refused_by_name(package, source, message):
    first = package("first", "TWO = 2.0\n")
    package("elsewhere", "thing = 1\n")  # importable, but not bundled
    second = package("second", source)
    with pytest.raises(RuntimeError, match="cannot be (bundled into|saved as)") as err:
        remote_code.bundle_source((first, second))
    assert message in str(err.value)


def test_a_pipeline_module_that_imports_the_package_is_not_saved(tmp_path, package):
    """A subclass of the pipeline in a user's module that imports `asintrovae_hf` cannot ship as remote code."""
    name = package("custom", "from asintrovae_hf import AsIntroVAEPipeline\n\n\n"
                             "class CustomPipeline(AsIntroVAEPipeline):\n    pass\n")
    custom = __import__(name, fromlist=["CustomPipeline"]).CustomPipeline
    base = tiny_image_pipeline()
    with pytest.raises(RuntimeError, match="bundlecase.custom cannot be saved as a pipeline's remote code: it imports "
                                           "asintrovae_hf"):
        custom(encoder=base.encoder, decoder=base.decoder).save_pretrained(tmp_path / "custom")


def test_a_pipeline_loaded_without_the_plugin_reads_configs_through_the_bundled_json_reader(tmp_path):
    """The models' code file carries `asintrovae_hf.json_io`: without the plugin, a component's `config.json` is read
    with the package's limits (here: nesting), not by a fallback `json.load`."""
    pipe = tiny_image_pipeline(channels=1)
    pipe.save_pretrained(tmp_path / "pipe")
    config = tmp_path / "pipe" / "encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "note": json.loads("[" * 40 + "]" * 40)}))
    run_without_plugin(f"""
from diffusers import DiffusionPipeline
try:
    DiffusionPipeline.from_pretrained({str(tmp_path / 'pipe')!r}, trust_remote_code=True)
    raise SystemExit("loaded a config nested 41 levels deep")
except ValueError as err:
    assert "config.json: expected JSON nested at most 32 levels deep, got 41 levels" in str(err), err
print("OK")
""", tmp_path)
