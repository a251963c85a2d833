"""Issue 34, item 7: every JSON file the package reads goes through one reader (`asintrovae_hf.json_io`) with size
and nesting limits and a one-line refusal. A `training_state.json` nested 100,000 deep used to end the resume in a
`RecursionError` traceback."""

import os
import re
import time

import pytest

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.json_io import JsonFileError, loads, nesting_depth, read_json, read_json_lines
from asintrovae_hf.training.args import parse_args
from asintrovae_hf.training.loop import train
from helpers import ROOT, TINY, reset_accelerate, run_training_script, tiny_image_pipeline

DEEP = "[" * 100_000 + "]" * 100_000


def test_the_reader_refuses_deep_large_and_special_files_in_one_line(tmp_path):
    started = time.perf_counter()
    with pytest.raises(JsonFileError, match=r"^deep.json: expected JSON nested at most 32 levels deep, got 100,000 "
                                            r"levels; not parsed\.$"):
        loads(DEEP, "deep.json")
    assert time.perf_counter() - started < 2
    assert nesting_depth('{"a": "[[[[", "b": [[1]]}') == 3  # brackets inside strings do not count
    assert loads('{"a": [[1]], "s": "\\"[["}') == {"a": [[1]], "s": '"[['}
    with pytest.raises(JsonFileError, match="expected at most 10 bytes of JSON, got 11 bytes"):
        loads('"abcdefghi"', "x", max_bytes=10)
    with pytest.raises(JsonFileError, match="expected a JSON object, got a JSON array"):
        loads("[1]", "x", expect=dict)
    with pytest.raises(JsonFileError, match="expected valid JSON, got JSONDecodeError"):
        loads("{not json", "x")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(JsonFileError, match="expected a regular file"):
        read_json(fifo)  # a FIFO would block the read
    (tmp_path / "r.jsonl").write_text('{"a": 1}\n\n{"b": 2}\n{"torn": ')
    assert [v for _, v in read_json_lines(tmp_path / "r.jsonl")] == [{"a": 1}, {"b": 2}]
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n' + "[" * 40 + "]" * 40 + "\n")
    with pytest.raises(JsonFileError, match="d.jsonl line 2: expected JSON nested at most 32"):
        list(read_json_lines(tmp_path / "d.jsonl"))


def test_no_json_read_bypasses_the_reader():
    """`json.load` / `json.loads` appear only in json_io.py, and in the shipped pipelines' code files only as the
    lines of json_io.py itself, in the bundles that carry a copy of it (their header names `asintrovae_hf.json_io`)."""
    reading = re.compile(r"\bjson\.loads?\(")
    reader = (ROOT / "src" / "asintrovae_hf" / "json_io.py").read_text().splitlines()
    reader_lines = {line for line in reader if reading.search(line)}
    assert reader_lines  # the reader itself is what the bundles copy
    offenders = []
    for folder in (ROOT / "src" / "asintrovae_hf", ROOT / "scripts"):
        for path in folder.rglob("*.py"):
            lines = path.read_text().splitlines()
            bundles_reader = bool(lines) and lines[0].startswith("# Generated from the ") and (
                "`asintrovae_hf.json_io`" in lines[0])
            for number, line in enumerate(lines, 1):
                if reading.search(line) and not (bundles_reader and line in reader_lines):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    allowed = ("src/asintrovae_hf/json_io.py:",)
    assert [o for o in offenders if not o.startswith(allowed)] == [], offenders


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    out = tmp_path_factory.mktemp("json") / "run"
    reset_accelerate()
    train(parse_args(TINY + ["--output_dir", str(out), "--max_train_steps", "1", "--save_images_steps", "1000"]))
    reset_accelerate()
    return out


@pytest.mark.slow
def test_a_training_state_nested_100000_deep_is_one_line_in_a_real_resume(checkpointed, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    (out / "checkpoint-1" / "training_state.json").write_text(DEEP)
    started = time.perf_counter()
    result = run_training_script(TINY + ["--output_dir", str(out), "--max_train_steps", "2",
                                         "--resume_from_checkpoint", "latest"])
    took = time.perf_counter() - started
    assert result.returncode == 1 and "Traceback" not in result.stderr and "RecursionError" not in result.stderr, \
        result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "checkpoint-1" in lines[0] and "training_state.json" in lines[0] and "100,000 levels" in lines[0], lines
    print(f"deep training_state.json: exit {result.returncode} in {took:.1f} s: {lines[0]}")


@pytest.mark.parametrize("name", ["model_index.json", "encoder/config.json", "decoder/config.json"])
def test_a_deep_pipeline_file_is_refused_in_one_line(tmp_path, name):
    tiny_image_pipeline(size=8).save_pretrained(tmp_path)
    (tmp_path / name).write_text("[" * 10_000 + "]" * 10_000)  # within the 64 KiB these files may have
    with pytest.raises(ValueError) as info:
        AsIntroVAEPipeline.from_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message and "10,000 levels" in message and name.split("/")[-1] in message, message


def test_a_deep_ema_state_is_one_line(checkpointed, tmp_path, capsys, fresh_accelerate):
    import shutil

    from asintrovae_hf.training.loop import main

    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    (out / "checkpoint-1" / "decoder_ema" / "ema_state.json").write_text('{"a": ' + "[" * 40 + "]" * 40 + "}")
    assert main(TINY + ["--output_dir", str(out), "--max_train_steps", "2", "--resume_from_checkpoint", "latest"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "ema_state.json" in lines[0] and "41 levels" in lines[0], lines[0]
