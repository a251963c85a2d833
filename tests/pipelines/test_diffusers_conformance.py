"""`AsIntroVAEPipeline` behaves as diffusers does, at every diffusers version the package supports.

Each loading argument is tried on one saved folder twice: with `AsIntroVAEPipeline.from_pretrained` (the plugin's
classes, no code from the folder) and with `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` (diffusers
running the code saved next to the weights). Both must give the same components, dtypes, devices and outputs, or the
same error. Then the checks diffusers applies to every pipeline (its `PipelineTesterMixin`): save/load without
safetensors, `to(dtype)`, `from_pipe`, the progress-bar configuration, output types, batch invariance, and a pipeline
built from fresh components.
"""

import json
import logging
import warnings

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from helpers import tiny_image_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny pipeline saved in float32, with an fp16 variant of its weights beside."""
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_image_pipeline(channels=1).save_pretrained(folder)
    tiny_image_pipeline(channels=1).to(torch.float16).save_pretrained(folder, variant="fp16")
    return folder


@pytest.fixture
def diffusers_info_logs(caplog):
    """diffusers' INFO logs captured for the test; its verbosity is restored afterwards."""
    previous = diffusers_logging.get_verbosity()
    caplog.set_level(logging.INFO, logger="diffusers")  # first, so that caplog restores the level it found
    diffusers_logging.set_verbosity_info()
    yield caplog
    diffusers_logging.set_verbosity(previous)


def _load(loader, folder, kwargs):
    """`(pipeline or the exception, the warning messages)` of one load."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = loader(folder, **kwargs)
        except Exception as err:  # the comparison below checks that diffusers raises the same
            result = err
    return result, sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def _load_both(folder, **kwargs):
    ours = _load(AsIntroVAEPipeline.from_pretrained, folder, kwargs)
    theirs = _load(lambda f, **kw: DiffusionPipeline.from_pretrained(f, trust_remote_code=True, **kw), folder,
                   kwargs)
    return ours, theirs


def _describe(pipe):
    return {name: (type(module).__name__, module.dtype, module.device) for name, module in pipe.components.items()}


def _samples(pipe):
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images


def assert_same_as_diffusers(ours, theirs):
    (pipe, our_warnings), (reference, their_warnings) = ours, theirs
    if isinstance(reference, Exception) or isinstance(pipe, Exception):
        assert type(pipe) is type(reference), f"ours: {pipe!r}; diffusers: {reference!r}"
        assert str(pipe) == str(reference)
        return
    assert type(pipe) is AsIntroVAEPipeline and type(pipe).__module__ == "asintrovae_hf.pipelines.pipeline_asintrovae"
    assert _describe(pipe) == _describe(reference)
    torch.testing.assert_close(_samples(pipe), _samples(reference), rtol=0, atol=0)
    assert our_warnings == their_warnings


LOADING_ARGUMENTS = {
    "no arguments": {},
    "dtype float16": {"dtype": torch.float16},
    "dtype bfloat16": {"dtype": torch.bfloat16},
    "torch_dtype (deprecated)": {"torch_dtype": torch.bfloat16},
    "dtype per component": {"dtype": {"decoder": torch.bfloat16, "default": torch.float16}},
    "dtype per component without default": {"dtype": {"encoder": torch.float16}},
    "device_map cpu": {"device_map": "cpu"},
    "device_map unsupported": {"device_map": "auto"},
    "variant fp16": {"variant": "fp16"},
    "variant fp16 with dtype": {"variant": "fp16", "dtype": torch.float16},
    "variant that was not saved": {"variant": "bf16"},
    "use_safetensors": {"use_safetensors": True},
    "low_cpu_mem_usage off": {"low_cpu_mem_usage": False},
    "low_cpu_mem_usage on": {"low_cpu_mem_usage": True},
    "low_cpu_mem_usage off with device_map": {"low_cpu_mem_usage": False, "device_map": "cpu"},
    "local_files_only": {"local_files_only": True},
    "an unknown argument": {"num_beams": 2},
}


@pytest.mark.parametrize("case", list(LOADING_ARGUMENTS))
def test_loading_argument_behaves_as_in_diffusers(saved, case):
    assert_same_as_diffusers(*_load_both(saved, **LOADING_ARGUMENTS[case]))


def test_dtype_is_applied(saved):
    """Beyond equality with diffusers: the dtypes asked for are the ones loaded (diffusers >= 0.40 knows `dtype`)."""
    pipe = AsIntroVAEPipeline.from_pretrained(saved, dtype={"decoder": torch.bfloat16, "default": torch.float16})
    assert (pipe.encoder.dtype, pipe.decoder.dtype) == (torch.float16, torch.bfloat16)
    pipe = AsIntroVAEPipeline.from_pretrained(saved, variant="fp16", dtype=torch.float16)
    assert pipe.decoder.dtype == torch.float16


def test_unknown_argument_is_warned_about_and_ignored(saved, caplog):
    caplog.set_level(logging.WARNING, logger="diffusers")
    AsIntroVAEPipeline.from_pretrained(saved, num_beams=2)
    assert "Keyword arguments {'num_beams': 2} are not expected by AsIntroVAEPipeline and will be ignored." in [
        r.getMessage() for r in caplog.records]


def test_each_loaded_component_is_logged_as_diffusers_does(saved, diffusers_info_logs):
    AsIntroVAEPipeline.from_pretrained(saved)
    ours = [r.getMessage() for r in diffusers_info_logs.records if r.getMessage().startswith("Loaded ")]
    diffusers_info_logs.clear()
    DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
    theirs = [r.getMessage() for r in diffusers_info_logs.records if r.getMessage().startswith("Loaded ")]
    assert ours == theirs and len(ours) == 2
    assert f"Loaded encoder as AsIntroVAEEncoder from `encoder` subfolder of {saved}." in ours


def test_passed_components_are_used_as_given(saved):
    """A component passed by keyword is used as is; the other is loaded. (diffusers' remote-code path cannot take a
    component: it would have to import the repo's module to check the class, so there is nothing to compare with.)"""
    decoder = AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    pipe = AsIntroVAEPipeline.from_pretrained(saved, decoder=decoder)
    assert pipe.decoder is decoder and isinstance(pipe.encoder, AsIntroVAEEncoder)
    loaded = AsIntroVAEPipeline.from_pretrained(saved)
    torch.testing.assert_close(_samples(pipe), _samples(AsIntroVAEPipeline(encoder=loaded.encoder, decoder=decoder)),
                               rtol=0, atol=0)
    assert not torch.equal(_samples(pipe), _samples(loaded))
    with pytest.raises(ValueError, match="should be"):  # diffusers' own check of the component's type
        AsIntroVAEPipeline.from_pretrained(saved, decoder=torch.nn.Linear(2, 2))


def test_trust_remote_code_never_runs_the_folder_code(saved, tmp_path):
    """The plugin's classes are always used: the code files saved in the folder are never imported, even with
    `trust_remote_code=True` (diffusers would run them)."""
    import shutil

    folder = tmp_path / "trapped"
    shutil.copytree(saved, folder)
    marker = tmp_path / "the folder's code ran"
    trap = f"open({str(marker)!r}, 'w').close()\n"
    for path in [folder / "pipeline_asintrovae.py", *folder.glob("*/modeling_*.py")]:
        path.write_text(trap + path.read_text())
    pipe = AsIntroVAEPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(pipe).__module__ == "asintrovae_hf.pipelines.pipeline_asintrovae" and not marker.exists()
    DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)  # the trap works: diffusers runs that code
    assert marker.exists()


def _write_index(folder, index):
    (folder / "model_index.json").write_text(index if isinstance(index, str) else json.dumps(index))


@pytest.mark.parametrize("entry", [["torch", "nn.Module"], ["modeling_asintrovae_encoder", "AsIntroVAEDecoder"],
                                   ["modeling_asintrovae_encoder", "AsIntroVAEPipeline"], "AsIntroVAEEncoder", None])
def test_model_index_must_name_a_class_the_component_may_have(saved, tmp_path, entry):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["encoder"] = entry
    _write_index(folder, index)
    with pytest.raises(ValueError, match=r"model_index.json entry 'encoder' .*expected \[module, class\] with the "
                                         r"class one of AsIntroVAEEncoder, AsIntroVAEVectorEncoder") as err:
        AsIntroVAEPipeline.from_pretrained(folder)
    assert "\n" not in str(err.value)


def test_model_index_class_must_match_the_component_config(saved, tmp_path):
    """An `AsIntroVAEVectorEncoder` named for a folder that holds an image encoder is refused (it would load a
    random model)."""
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["encoder"][1] = "AsIntroVAEVectorEncoder"
    _write_index(folder, index)
    with pytest.raises(ValueError, match=r"names AsIntroVAEVectorEncoder for 'encoder', but encoder/config.json "
                                         r"is a AsIntroVAEEncoder"):
        AsIntroVAEPipeline.from_pretrained(folder)


@pytest.mark.parametrize("content", ["[1, 2]", "{", "[" * 100_000 + "]" * 100_000, '"text"', "\xff\xfe"])
def test_unreadable_model_index_is_one_line(saved, tmp_path, content):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    (folder / "model_index.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        AsIntroVAEPipeline.from_pretrained(folder)
    message = str(err.value)
    assert "model_index.json" in message and "\n" not in message and len(message) < 400


# ---- the models alone ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, name", [(AsIntroVAEEncoder, "encoder"), (AsIntroVAEDecoder, "decoder")])
def test_models_take_diffusers_loading_arguments(saved, cls, name):
    model = cls.from_pretrained(saved, subfolder=name, variant="fp16", dtype=torch.float16, device_map="cpu")
    assert model.dtype == torch.float16 and model.device.type == "cpu"
    reference = AsIntroVAEPipeline.from_pretrained(saved, variant="fp16", dtype=torch.float16).components[name]
    for (key, ours), (_, theirs) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(ours, theirs), key
    assert cls.from_pretrained(saved, subfolder=name, dtype=torch.bfloat16).dtype == torch.bfloat16


# ---- diffusers' checks of every pipeline ---------------------------------------------------------------------


def test_save_load_without_safetensors(tmp_path):
    pipe = tiny_image_pipeline(channels=1)
    pipe.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "decoder" / "diffusion_pytorch_model.bin").exists()
    assert not list(tmp_path.glob("*/*.safetensors"))
    (ours, _), (theirs, _) = _load_both(tmp_path)
    torch.testing.assert_close(_samples(ours), _samples(pipe), rtol=0, atol=0)
    torch.testing.assert_close(_samples(theirs), _samples(pipe), rtol=0, atol=0)


def test_save_and_load_a_variant(tmp_path):
    pipe = tiny_image_pipeline(channels=1).to(torch.float16)
    pipe.save_pretrained(tmp_path, variant="fp16")
    assert sorted(p.name for p in tmp_path.glob("*/*.safetensors")) == ["diffusion_pytorch_model.fp16.safetensors"] * 2
    loaded = AsIntroVAEPipeline.from_pretrained(tmp_path, variant="fp16", dtype=torch.float16)
    for (key, a), (_, b) in zip(loaded.decoder.state_dict().items(), pipe.decoder.state_dict().items()):
        assert torch.equal(a, b), key
    with pytest.raises(OSError):  # diffusers: no non-variant weights to load
        AsIntroVAEPipeline.from_pretrained(tmp_path)


def test_to_dtype_moves_every_component():
    pipe = tiny_image_pipeline(channels=1).to(torch.float64)
    assert {m.dtype for m in pipe.components.values()} == {torch.float64} and pipe.dtype == torch.float64
    assert pipe(output_type="pt").images.dtype == torch.float32  # outputs stay float32, as in diffusers


def test_from_pipe_shares_components_and_takes_diffusers_arguments():
    pipe = tiny_image_pipeline(channels=1)
    same = AsIntroVAEPipeline.from_pipe(pipe)
    assert same.encoder is pipe.encoder and same.decoder is pipe.decoder
    half = AsIntroVAEPipeline.from_pipe(tiny_image_pipeline(channels=1), dtype=torch.float16)
    assert {m.dtype for m in half.components.values()} == {torch.float16}
    decoder = AsIntroVAEDecoder(out_channels=1, sample_size=16, latent_dim=4, block_out_channels=(8, 16))
    swapped = AsIntroVAEPipeline.from_pipe(pipe, decoder=decoder)
    assert swapped.decoder is decoder and swapped.encoder is pipe.encoder


def test_progress_bar_config_is_honoured(capsys):
    pipe = tiny_image_pipeline(channels=1)
    images = torch.rand(3, 1, 16, 16)
    pipe.score(images, batch_size=1)
    assert "3/3" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe.score(images, batch_size=1)
    assert capsys.readouterr().err == ""


def test_output_types_hold_the_same_values():
    pipe = tiny_image_pipeline(channels=1)
    run = lambda output_type: pipe(batch_size=2, generator=torch.Generator().manual_seed(3),  # noqa: E731
                                   output_type=output_type).images
    pt, np_images, pil = run("pt"), run("np"), run("pil")
    assert pt.shape == (2, 1, 16, 16) and np_images.shape == (2, 16, 16, 1) and len(pil) == 2
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images, rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(pil[1]), (np_images[1, ..., 0] * 255).round().astype(np.uint8))
    latents = run("latent")
    torch.testing.assert_close(pipe(latents=latents, output_type="pt").images, pt, rtol=0, atol=0)
    assert pipe(batch_size=2, return_dict=False)[0][0].size == (16, 16)


def test_samples_do_not_depend_on_the_rest_of_the_batch():
    pipe = tiny_image_pipeline(channels=1)
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batch = pipe(batch_size=3, generator=generators, output_type="pt").images
    alone = pipe(batch_size=1, generator=[torch.Generator().manual_seed(2)], output_type="pt").images
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-6)


def test_fresh_components_rebuild_the_pipeline():
    pipe = tiny_image_pipeline(channels=1)
    assert set(pipe.components) == {"encoder", "decoder"}
    rebuilt = AsIntroVAEPipeline(**pipe.components)
    torch.testing.assert_close(_samples(rebuilt), _samples(pipe), rtol=0, atol=0)


def test_a_special_or_huge_model_index_is_refused_without_reading_it(saved, tmp_path):
    import os
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    index = folder / "model_index.json"
    index.unlink()
    os.mkfifo(index)  # reading it would block: diffusers itself looks for a regular file
    with pytest.raises((OSError, ValueError), match="model_index.json"):
        AsIntroVAEPipeline.from_pretrained(folder)
    index.unlink()
    index.write_text(json.dumps({"_class_name": "AsIntroVAEPipeline", "padding": "x" * 100_000}))
    with pytest.raises(ValueError, match="expected at most 65536 bytes"):
        AsIntroVAEPipeline.from_pretrained(folder)
