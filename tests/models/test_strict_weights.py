"""Weights that do not fill the model exactly are refused, in one line naming the file and the key (diffusers alone
only warns and leaves those tensors at random). Every other argument of `from_pretrained` still reaches diffusers."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline, AsIntroVAEVectorEncoder
from helpers import tiny_image_pipeline, tiny_vector_pipeline

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture
def saved(tmp_path):
    pipe = tiny_image_pipeline(size=8, block_out_channels=(8,))
    pipe.save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


def edit_weights(folder, change):
    path = folder / WEIGHTS
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    return path


def drop(key):
    return lambda t: t.pop(key)


def add(key, value):
    return lambda t: t.__setitem__(key, value)


def cast(key, dtype):
    return lambda t: t.__setitem__(key, t[key].to(dtype))


@pytest.mark.parametrize("change, key, says", [
    (drop("norm_in.running_var"), "norm_in.running_var", "the weights lack 'norm_in.running_var'"),
    (drop("norm_in.num_batches_tracked"), "norm_in.num_batches_tracked", "which AsIntroVAEEncoder needs"),
    (drop("fc.weight"), "fc.weight", "the weights lack 'fc.weight'"),
    (add("extra.weight", torch.zeros(3)), "extra.weight", "unexpected tensor 'extra.weight'"),
    (cast("fc.weight", torch.int32), "fc.weight", "holds torch.int32; AsIntroVAEEncoder expects floating-point"),
    (cast("conv_in.weight", torch.bool), "conv_in.weight", "holds torch.bool"),
    (cast("norm_in.num_batches_tracked", torch.float32), "norm_in.num_batches_tracked", "expects integer values"),
    (cast("norm_in.num_batches_tracked", torch.bool), "norm_in.num_batches_tracked", "holds torch.bool"),
    (add("fc.weight", torch.zeros(3, 3)), "fc.weight", "has shape (3, 3); AsIntroVAEEncoder expects (8, 128)"),
], ids=["bn-buffer-missing", "counter-missing", "weight-missing", "unexpected", "int", "bool", "float-counter",
        "bool-counter", "shape"])
def test_a_model_refuses_weights_that_do_not_fill_it(saved, change, key, says):
    path = edit_weights(saved / "encoder", change)
    for kwargs in ({}, {"low_cpu_mem_usage": False}):
        with pytest.raises(ValueError) as info:
            AsIntroVAEEncoder.from_pretrained(saved, subfolder="encoder", **kwargs)
        message = str(info.value)
        assert "\n" not in message and str(path) in message and key in message and says in message, message
    # the pipeline loader goes through the same class
    with pytest.raises(ValueError) as info:
        AsIntroVAEPipeline.from_pretrained(saved)
    assert "\n" not in str(info.value) and key in str(info.value) and WEIGHTS in str(info.value)


def test_several_missing_keys_are_counted(saved):
    edit_weights(saved / "decoder", lambda t: [t.pop(k) for k in list(t) if "norm" in k])
    with pytest.raises(ValueError, match=r"the weights lack 'up_blocks\.0\.resnet\.norm1\.bias' \(and \d+ more\), "
                                         r"which AsIntroVAEDecoder needs; expected exactly the model's \d+ tensors"):
        AsIntroVAEDecoder.from_pretrained(saved / "decoder")


def test_vector_models_are_strict_too(tmp_path):
    pipe = tiny_vector_pipeline()
    pipe.encoder.save_pretrained(tmp_path / "enc")
    edit_weights(tmp_path / "enc", cast("net.0.weight", torch.int64))
    with pytest.raises(ValueError, match=r"'net\.0\.weight' holds torch\.int64; AsIntroVAEVectorEncoder expects"):
        AsIntroVAEVectorEncoder.from_pretrained(tmp_path / "enc")


def test_every_other_argument_reaches_diffusers(saved):
    """dtype, loading info, low_cpu_mem_usage, variant... pass through unchanged; intact weights load exactly."""
    original = load_file(saved / "encoder" / WEIGHTS)
    model, info = AsIntroVAEEncoder.from_pretrained(saved, subfolder="encoder", torch_dtype=torch.float16,
                                                    low_cpu_mem_usage=False, output_loading_info=True)
    assert model.fc.weight.dtype == torch.float16 and info["missing_keys"] == [] and info["unexpected_keys"] == []
    model = AsIntroVAEEncoder.from_pretrained(saved / "encoder")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    with pytest.raises(OSError, match="fp16"):  # a variant that is not there: diffusers' own error
        AsIntroVAEEncoder.from_pretrained(saved, subfolder="encoder", variant="fp16")


def test_a_bin_file_is_checked_before_it_is_loaded(saved):
    """use_safetensors=False reads a torch pickle: its declared sizes are checked from the zip entries first."""
    from test_hostile_configs import inflating_archive

    folder = saved / "encoder"
    (folder / WEIGHTS).unlink()
    inflating_archive(folder / "diffusion_pytorch_model.bin", values=2**22, key="fc.weight")
    with pytest.raises(ValueError, match=r"diffusion_pytorch_model\.bin' declares 16,77[0-9,]+ bytes of tensor data"):
        AsIntroVAEEncoder.from_pretrained(folder, use_safetensors=False)


def test_a_resume_from_a_checkpoint_missing_a_buffer_is_one_line(tmp_path, capsys, fresh_accelerate):
    from asintrovae_hf.training.loop import main
    from helpers import TINY, reset_accelerate

    out = tmp_path / "run"
    args = TINY + ["--output_dir", str(out), "--checkpointing_steps", "1", "--save_images_steps", "1000"]
    assert main(args + ["--max_train_steps", "1"]) == 0
    edit_weights(out / "checkpoint-1" / "decoder", drop("up_blocks.0.resnet.norm1.running_mean"))
    reset_accelerate()
    capsys.readouterr()
    assert main(args + ["--max_train_steps", "2", "--resume_from_checkpoint", "latest"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "checkpoint-1" in lines[0] and "up_blocks.0.resnet.norm1.running_mean" in lines[0], lines[0]
    assert json.loads((out / "checkpoint-1" / "training_state.json").read_text())["global_step"] == 1


def test_sharded_weights_are_checked_from_their_headers(tmp_path):
    """A sharded save is loaded shard by shard (no state dict up front): the keys and dtypes come from the headers."""
    pipe = tiny_image_pipeline(size=8, block_out_channels=(8,))
    pipe.encoder.save_pretrained(tmp_path / "enc", max_shard_size="2KB")
    shards = sorted((tmp_path / "enc").glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) > 1
    AsIntroVAEEncoder.from_pretrained(tmp_path / "enc")  # intact: loads
    tensors = load_file(shards[-1])
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].to(torch.int16) if tensors[key].is_floating_point() else tensors[key].float()
    save_file(tensors, shards[-1])
    with pytest.raises(ValueError) as info:
        AsIntroVAEEncoder.from_pretrained(tmp_path / "enc")
    assert key in str(info.value) and str(info.value).startswith(str(shards[-1])) and "expects" in str(info.value)
