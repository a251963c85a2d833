"""One clear line, everywhere: a bad pretrained config, a bad training state, torch's refusal of a pickle. Each names
what was expected and what was given, without terminal colour codes, and no message or warning grows with the size
of the input."""

import json
import os
import re
import shutil

import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.errors import one_line, unpickling_detail
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY as BASE, reset_accelerate, run_training_script, tiny_image_pipeline

TINY = BASE + ["--save_images_steps", "1000"]
pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "\x1b" not in err, err[-3000:]
    return lines[0]


# ---- --pretrained_model_name_or_path with a bad config ------------------------------------------------------------


@pytest.fixture
def pretrained(tmp_path):
    tiny_image_pipeline(size=8).save_pretrained(tmp_path / "pipe")
    return tmp_path / "pipe"


@pytest.mark.parametrize("text, says", [
    ("{not json", "config.json: expected valid JSON, got JSONDecodeError"),  # the package's JSON reader
    ("[1, 2, 3]", "expected a JSON object of options, got a JSON list"),
    ('"latent_dim"', "expected a JSON object of options, got a JSON str"),
    (None, "latent_dim must be a positive integer, got 'eight' (str)"),
    (None, "block_out_channels must be a non-empty list of positive integers, got [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,"),
], ids=["not-json", "list", "string", "wrong-type", "long-list"])
def test_a_bad_pretrained_config_is_one_line(pretrained, tmp_path, capsys, text, says):
    path = pretrained / "decoder" / "config.json"
    if text is None:
        config = json.loads(path.read_text())
        if "eight" in says:
            config["latent_dim"] = "eight"
        else:
            config["block_out_channels"] = list(range(-1, 5000))
        text = json.dumps(config)
    path.write_text(text)
    capsys.readouterr()
    assert main(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1",
                        "--pretrained_model_name_or_path", str(pretrained)]) == 1
    line = error_line(capsys)
    assert "--pretrained_model_name_or_path" in line and says in line and len(line) < 1000, line


def test_a_50_mb_config_is_one_short_line(pretrained, tmp_path):
    """The config is refused by its size before it is parsed; diffusers quoted it whole in a warning (52 MB)."""
    path = pretrained / "encoder" / "config.json"
    config = json.loads(path.read_text())
    config["padding"] = "x" * 50_000_000
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        AsIntroVAEPipeline.from_pretrained(pretrained)
    message = str(info.value)
    assert "expected a config of at most 65,536 bytes, got 50,000," in message and "encoder" in message
    assert len(message) < 600 and "\n" not in message
    result = run_training_script(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1",
                                         "--pretrained_model_name_or_path", str(pretrained)])
    assert result.returncode == 1 and len(result.stderr) < 20_000, len(result.stderr)
    assert "error: --pretrained_model_name_or_path" in result.stderr and "Traceback" not in result.stderr


def test_unknown_config_options_are_one_bounded_warning(pretrained, caplog):
    path = pretrained / "encoder" / "config.json"
    config = json.loads(path.read_text())
    config.update({"padding": "x" * 60_000, **{f"extra_{i}": i for i in range(20)}})
    path.write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        encoder = AsIntroVAEEncoder.from_pretrained(pretrained, subfolder="encoder")
    assert "padding" not in encoder.config
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "AsIntroVAEEncoder ignores 21 unknown config option(s): ['extra_0', 'extra_1'," in text
    assert len(text) < 1000, len(text)


def test_model_messages_quote_what_was_given_briefly():
    with pytest.raises(ValueError) as info:
        AsIntroVAEDecoder(latent_dim=[7] * 100_000)
    assert len(str(info.value)) < 300 and "latent_dim must be a positive integer, got [7, 7," in str(info.value)
    with pytest.raises(ValueError) as info:
        AsIntroVAEEncoder(sample_size=12, block_out_channels=(8,) * 60)
    assert len(str(info.value)) < 1000 and "does not fit block_out_channels=(8, 8," in str(info.value)


# ---- training_state.json ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    reset_accelerate()
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1"]))
    reset_accelerate()
    return out


@pytest.mark.parametrize("step, says", [
    (-5, "global_step must be a non-negative integer, got -5"),
    (10**12, "global_step is 1000000000000, but the folder is checkpoint-2; expected the same step"),
    ("2", "global_step must be a non-negative integer, got '2'"),
    (True, "global_step must be a non-negative integer, got True"),
    (2.5, "global_step must be a non-negative integer, got 2.5"),
    ("x" * 100_000, "global_step must be a non-negative integer, got 'xxxx"),
], ids=["negative", "huge", "string", "bool", "float", "long"])
def test_a_bad_training_state_is_one_line(trained, tmp_path, capsys, step, says):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    path = out / "checkpoint-2" / "training_state.json"
    state = json.loads(path.read_text())
    state["global_step"] = step
    path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]) == 1
    line = error_line(capsys)
    assert "checkpoint-2" in line and "training_state.json" in line and says in line and len(line) < 600, line
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-1",
                                                                                         "checkpoint-2"]


@pytest.mark.parametrize("content, says", [
    ("[]", "must hold a JSON object with 'global_step' and 'options'"),
    ('{"options": {}}', "is missing or unreadable (KeyError: 'global_step')"),
    ('{"global_step": 2, "options": [1]}', "must hold a JSON object"),
])
def test_a_training_state_of_the_wrong_shape_is_one_line(trained, tmp_path, capsys, content, says):
    from asintrovae_hf.training.checkpointing import TrainingState
    from asintrovae_hf.errors import CheckpointError

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / "training_state.json").write_text(content)
    with pytest.raises(CheckpointError) as info:
        TrainingState.load(str(folder))
    assert says in one_line(info.value), str(info.value)


def test_a_checkpoint_beyond_the_run_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "1", "--resume_from_checkpoint", "latest"]) == 1
    line = error_line(capsys)
    assert "it is at step 2, beyond this run's 1 steps" in line


# ---- torch's refusal of a pickle ----------------------------------------------------------------------------------


class Payload:
    """Unpickling it calls `function("echo pwned")`."""

    def __init__(self, function):
        self.function = function

    def __reduce__(self):
        return (self.function, ("print('pwned')" if self.function is exec else "echo pwned",))


# torch 2.6 names the builtin with its module (`builtins.exec`), newer releases without
@pytest.mark.parametrize("function, named", [(exec, r"GLOBAL (builtins\.)?exec was not an allowed global"),
                                             (os.system, r"GLOBAL posix\.system whose module posix is blocked")],
                         ids=["exec", "os.system"])
def test_the_refusal_of_a_pickle_names_the_global_without_colour_codes(trained, tmp_path, capsys, function, named):
    """torch words the two refusals differently (and colours one): both are named, without the advice."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    torch.save({"state": Payload(function)}, out / "checkpoint-2" / "optimizer.bin")
    capsys.readouterr()
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]) == 1
    line = error_line(capsys)
    assert "optimizer.bin cannot be loaded safely (UnpicklingError: " in line and re.search(named, line), line
    assert "add_safe_globals" not in line and "\x1b" not in line and "[1m" not in line and "PyTorch 2.6" not in line


def test_unpickling_detail_and_one_line_strip_escape_codes():
    try:
        torch.load(_evil(exec), weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's own type
        assert "\x1b[1m" in str(err)  # the control: torch colours its advice
        detail = unpickling_detail(err)
    assert re.fullmatch(r"Unsupported global: GLOBAL (builtins\.)?exec was not an allowed global by default", detail)
    assert one_line(ValueError("a \x1b[1mbold\x1b[0m\tline\nand \x07more")) == "a bold line and more"
    assert len(one_line(ValueError("x" * 10**6))) == 2000


def test_the_converter_refuses_either_wording(tmp_path):
    from asintrovae_hf.models.convert_reference import load_reference_checkpoint

    for function in (exec, os.system):
        torch.save({"model": {}, "x": Payload(function)}, tmp_path / "evil.pth")
        with pytest.raises(ValueError, match=r"^refused to load .*\(.*GLOBAL .*\); reference checkpoints are read"):
            load_reference_checkpoint(str(tmp_path / "evil.pth"))


def _evil(function):
    import io

    buffer = io.BytesIO()
    torch.save({"state": Payload(function)}, buffer)
    buffer.seek(0)
    return buffer
