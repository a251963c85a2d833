"""Pipelines saved by release 0.2.0 (parameter names `conv.<i>...`, before the explicit down and up blocks) load and
give the outputs they gave then: `tests/fixtures/pipeline_saved_v0_2_0/`, made by its `make_fixture.py` with the
0.2.0 code. Also: a folder saved with today's names loads to the same outputs, and unknown names are still refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from helpers import NO_PLUGIN

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pipeline_saved_v0_2_0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
CASES = ["unconditional", "conditional"]
ATOL = 1e-6


def outputs(pipe, labels):
    """As `make_fixture.outputs`: the same calls, the same seeds."""
    channels = pipe.encoder.config.in_channels
    kw = {} if labels is None else {"class_labels": labels}
    x = torch.linspace(0, 1, 2 * channels * 8 * 8).reshape(2, channels, 8, 8)
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    out = {}
    out["sample"] = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np", **kw).images
    out["reconstruct"] = pipe.reconstruct(x, output_type="np", **kw).images
    posterior = pipe.encode(x, **kw).latent_dist
    out["encode_mean"], out["encode_logvar"] = posterior.mean, posterior.logvar
    with torch.no_grad():
        out["decoder_raw"] = pipe.decoder(z, **kw)
        out["encoder_raw_mu"], out["encoder_raw_logvar"] = pipe.encoder(x, **kw)
    return {k: torch.as_tensor(v).flatten().tolist() for k, v in out.items()}


def assert_outputs(got, case):
    want = EXPECTED[case]["outputs"]
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, rtol=0, err_msg=f"{case}: {key}")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(EXPECTED["torch_threads"])
    yield
    torch.set_num_threads(threads)


def test_the_fixture_holds_the_old_names():
    """The folders really are in the 0.2.0 layout: each weight file holds exactly the keys recorded at saving."""
    for case in CASES:
        for part in ("encoder", "decoder"):
            keys = sorted(load_file(FIXTURE / case / part / "diffusion_pytorch_model.safetensors"))
            assert keys == EXPECTED[case]["state_dict_keys"][part]
            assert any(k.startswith("conv.") for k in keys)


@pytest.mark.parametrize("case", CASES)
def test_a_pipeline_saved_by_0_2_0_gives_the_same_outputs(case):
    pipe = AsIntroVAEPipeline.from_pretrained(FIXTURE / case)
    assert type(pipe.encoder) is AsIntroVAEEncoder and type(pipe.decoder) is AsIntroVAEDecoder
    assert_outputs(outputs(pipe, EXPECTED[case]["class_labels"]), case)


@pytest.mark.parametrize("case", CASES)
def test_its_models_load_alone_with_the_old_names(case):
    """`from_pretrained` of each model class maps the 0.2.0 names (what the pipeline's loading does per component)."""
    encoder = AsIntroVAEEncoder.from_pretrained(FIXTURE / case, subfolder="encoder")
    decoder = AsIntroVAEDecoder.from_pretrained(FIXTURE / case, subfolder="decoder")
    pipe = AsIntroVAEPipeline(encoder=encoder.eval(), decoder=decoder.eval())
    assert_outputs(outputs(pipe, EXPECTED[case]["class_labels"]), case)


@pytest.mark.parametrize("case", CASES)
def test_saved_again_it_has_todays_names_and_the_same_outputs(case, tmp_path):
    pipe = AsIntroVAEPipeline.from_pretrained(FIXTURE / case)
    pipe.save_pretrained(tmp_path / "again")
    for part in ("encoder", "decoder"):
        keys = set(load_file(tmp_path / "again" / part / "diffusion_pytorch_model.safetensors"))
        assert keys == set(getattr(pipe, part).state_dict())
    again = AsIntroVAEPipeline.from_pretrained(tmp_path / "again")
    assert_outputs(outputs(again, EXPECTED[case]["class_labels"]), case)


@pytest.mark.parametrize("extra", ["conv.99.weight", "down_blocks.7.resnet.conv1.weight", "bogus"])
def test_an_unknown_name_is_still_refused(extra, tmp_path):
    """Old names are mapped before the strict check; a name neither layout has is refused, old-style or new."""
    folder = tmp_path / "pipe"
    shutil.copytree(FIXTURE / "unconditional", folder)
    path = folder / "encoder" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    weights[extra] = torch.zeros(1)
    save_file(weights, path)
    with pytest.raises(ValueError, match="unexpected tensor"):
        AsIntroVAEEncoder.from_pretrained(folder, subfolder="encoder")


def test_a_missing_old_name_is_named(tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(FIXTURE / "unconditional", folder)
    path = folder / "decoder" / "diffusion_pytorch_model.safetensors"
    weights = load_file(path)
    missing = sorted(k for k in weights if k.endswith("norm1.running_mean"))[0]
    del weights[missing]
    save_file(weights, path)
    with pytest.raises(ValueError, match="the weights lack"):
        AsIntroVAEDecoder.from_pretrained(folder, subfolder="decoder")


@pytest.mark.parametrize("case", CASES)
def test_it_loads_without_the_plugin_with_its_own_code(case, tmp_path):
    """`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` where the plugin cannot be imported runs the
    code saved in the folder (0.2.0's) and gives the stored outputs."""
    import inspect

    script = NO_PLUGIN + """
import json, numpy as np, torch
from diffusers import DiffusionPipeline
torch.set_num_threads(1)
try:
    import asintrovae_hf
    raise SystemExit("the plugin is importable")
except ModuleNotFoundError:
    pass
""" + inspect.getsource(outputs) + f"""
pipe = DiffusionPipeline.from_pretrained({str(FIXTURE / case)!r}, trust_remote_code=True)
assert type(pipe).__name__ == "AsIntroVAEPipeline" and "asintrovae_hf" not in type(pipe).__module__
print(json.dumps(outputs(pipe, {EXPECTED[case]["class_labels"]!r})))
"""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_outputs(json.loads(result.stdout.strip().splitlines()[-1]), case)


def _old_names(model):
    """`{today's name: 0.2.0's name}` of a conv model, from the table in `models/loading.py`."""
    new_to_old = {new: old for old, new in model._prefixes_of_0_2_0().items()}
    names = {}
    for key in model.state_dict():
        prefix = next((p for p in new_to_old if key.startswith(p)), None)
        names[key] = key if prefix is None else new_to_old[prefix] + key[len(prefix):]
    return names


@pytest.mark.parametrize("part", ["encoder", "decoder"])
@pytest.mark.parametrize("low_cpu_mem_usage", [True, False])
def test_sharded_weights_with_the_old_names_load(part, low_cpu_mem_usage, tmp_path):
    """A save with `max_shard_size` holds the old names in several shards (diffusers renames only a single file's);
    they load to the same outputs, and the model's names map back to exactly the fixture's."""
    pipe = AsIntroVAEPipeline.from_pretrained(FIXTURE / "unconditional")
    model = getattr(pipe, part)
    assert sorted(_old_names(model).values()) == EXPECTED["unconditional"]["state_dict_keys"][part]
    folder = tmp_path / part
    model.save_pretrained(folder, max_shard_size="4KB")
    shards = sorted(folder.glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) > 1
    names = _old_names(model)
    for shard in shards:  # back to 0.2.0's names, as a 0.2.0 save with max_shard_size wrote them
        save_file({names[k]: v for k, v in load_file(shard).items()}, shard)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {names[k]: v for k, v in data["weight_map"].items()}
    index.write_text(json.dumps(data))
    loaded = type(model).from_pretrained(folder, low_cpu_mem_usage=low_cpu_mem_usage).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_state_dict_takes_the_old_names_and_still_refuses_unknown_ones():
    pipe = AsIntroVAEPipeline.from_pretrained(FIXTURE / "conditional")
    for part in ("encoder", "decoder"):
        old = load_file(FIXTURE / "conditional" / part / "diffusion_pytorch_model.safetensors")
        fresh = type(getattr(pipe, part)).from_config(getattr(pipe, part).config)
        fresh.load_state_dict(old)  # strict
        for key, value in getattr(pipe, part).state_dict().items():
            assert torch.equal(fresh.state_dict()[key], value), key
        with pytest.raises(RuntimeError, match="Unexpected key"):
            fresh.load_state_dict({**old, "conv.98.weight": torch.zeros(1)})
        container = torch.nn.ModuleDict({"model": fresh})  # under a prefix too
        container.load_state_dict({f"model.{k}": v for k, v in old.items()})
