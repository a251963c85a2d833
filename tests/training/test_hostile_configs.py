"""Configurations and weight files that ask for absurd memory: refused in one line, with the figure and the limit,
before anything is allocated. The memory-hungry cases run in a subprocess under an address-space limit, so that a
regression fails the test (an allocation error, not our refusal) instead of eating the machine."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from asintrovae_hf.models.autoencoder_image import conv_model_size
from asintrovae_hf.models.autoencoder_vector import mlp_size
from asintrovae_hf.models.loading import MAX_ACTIVATION_VALUES, MAX_PARAMETERS, check_weight_file
from helpers import TINY, run_training_script, tiny_image_pipeline, tiny_vector_pipeline

ADDRESS_SPACE_LIMIT = 6 * 2**30  # bytes: torch and diffusers import in well under this; 10**9 parameters do not fit


@pytest.mark.parametrize("in_channels, sample_size, latent_dim, channels, classes, embed", [
    (1, 8, 4, (8,), None, None), (3, 32, 16, (8, 16, 32), None, None), (3, 16, 5, (8, 8), 10, None),
    (1, 16, 4, (4, 12), 3, 7)])
def test_parameter_count_from_the_config_is_the_built_models(in_channels, sample_size, latent_dim, channels, classes,
                                                              embed):
    kw = dict(sample_size=sample_size, latent_dim=latent_dim, block_out_channels=channels, num_class_embeds=classes,
              class_embed_dim=embed)
    embedding = (embed or 4 * channels[0]) if classes else None
    for kind, model in (("encoder", AsIntroVAEEncoder(in_channels=in_channels, **kw)),
                        ("decoder", AsIntroVAEDecoder(out_channels=in_channels, **kw))):
        counted, largest = conv_model_size(kind, in_channels, sample_size, latent_dim, channels, embedding, classes)
        assert counted == sum(p.numel() for p in model.parameters()), kind
        assert largest >= channels[0] * sample_size**2
    vector = AsIntroVAEVectorEncoder(in_features=3, latent_dim=2, hidden_dims=(5, 7))
    assert mlp_size(3, (5, 7), 4) == (sum(p.numel() for p in vector.parameters()), 7)
    decoder = AsIntroVAEVectorDecoder(out_features=3, latent_dim=2, hidden_dims=())
    assert mlp_size(2, (), 3)[0] == sum(p.numel() for p in decoder.parameters())


# Each case: a model class, config changes, and what the one-line refusal must say.
ABSURD = [
    ("AsIntroVAEDecoder", {"latent_dim": 10**9}, f"parameters; the limit is {MAX_PARAMETERS:,}"),
    ("AsIntroVAEEncoder", {"sample_size": 10**6}, f"parameters; the limit is {MAX_PARAMETERS:,}"),
    ("AsIntroVAEDecoder", {"block_out_channels": [100000] * 6, "sample_size": 64},
     "has 1,260,005,800,001 parameters"),  # 7 residual blocks of 2 x 9 x 100000^2 weights
    ("AsIntroVAEEncoder", {"latent_dim": 10**30}, "about 10^"),
    ("AsIntroVAEEncoder", {"block_out_channels": [1] * 16, "sample_size": 2**17, "latent_dim": 1},
     f"values per image; the limit is {MAX_ACTIVATION_VALUES:,}"),
    ("AsIntroVAEVectorEncoder", {"hidden_dims": [10**6, 10**6]}, "1,000,00"),
    ("AsIntroVAEVectorDecoder", {"latent_dim": 10**12}, "parameters; the limit is"),
    ("AsIntroVAEVectorDecoder", {"hidden_dims": [1] * 1000}, "1000 entries in block_out_channels / hidden_dims"),
]

# In a fresh interpreter under RLIMIT_AS: load each edited folder with from_pretrained (the path the pipeline loader
# and --pretrained_model_name_or_path take), and build each config directly; report what was raised.
CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
import asintrovae_hf.models as models
for line in sys.stdin:
    case = json.loads(line)
    cls = getattr(models, case["cls"])
    for how in ("from_pretrained", "init"):
        try:
            if how == "from_pretrained":
                cls.from_pretrained(case["folder"])
            else:
                cls(**case["config"])
            report = {"how": how, "error": None}
        except BaseException as err:
            report = {"how": how, "error": type(err).__name__, "is_value_error": isinstance(err, ValueError),
                      "message": str(err)}
        print("REPORT " + json.dumps(report), flush=True)
"""


def saved_model(cls_name: str, folder: Path) -> Path:
    pipe = tiny_vector_pipeline() if "Vector" in cls_name else tiny_image_pipeline()
    model = pipe.encoder if "Encoder" in cls_name else pipe.decoder
    model.save_pretrained(folder)
    return folder


def test_absurd_configs_are_refused_before_any_allocation(tmp_path):
    cases = []
    for i, (cls_name, change, _) in enumerate(ABSURD):
        folder = saved_model(cls_name, tmp_path / f"m{i}")
        config = json.loads((folder / "config.json").read_text())
        config.update(change)
        (folder / "config.json").write_text(json.dumps(config))
        init = {k: v for k, v in config.items() if not k.startswith("_")}
        cases.append({"cls": cls_name, "folder": str(folder), "config": init})
    result = subprocess.run([sys.executable, "-c", CHILD, str(ADDRESS_SPACE_LIMIT)],
                            input="".join(json.dumps(c) + "\n" for c in cases), capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    reports = [json.loads(line[7:]) for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 2 * len(cases), result.stderr[-3000:]
    for i, (cls_name, change, expected) in enumerate(ABSURD):
        for report in reports[2 * i: 2 * i + 2]:
            assert report["is_value_error"], (cls_name, change, report)
            message = report["message"]
            assert "\n" not in message and len(message) < 400 and cls_name in message, message
            assert expected in message, (message, expected)


def test_the_training_script_refuses_an_absurd_pretrained_config_in_one_line(tmp_path):
    pipe = tiny_image_pipeline(size=8)
    pipe.save_pretrained(tmp_path / "pipe")
    config_path = tmp_path / "pipe" / "decoder" / "config.json"
    config = json.loads(config_path.read_text())
    config["latent_dim"] = 10**30
    config_path.write_text(json.dumps(config))
    result = run_training_script(TINY + ["--output_dir", str(tmp_path / "o"), "--max_train_steps", "1",
                                         "--pretrained_model_name_or_path", str(tmp_path / "pipe")])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "about 10^31 parameters; the limit is 1,000,000,000" in lines[0], result.stderr[-2000:]
    assert "decoder" in lines[0]


# ---- weight files that inflate ------------------------------------------------------------------------------------


def inflating_archive(path: Path, values: int = 32 * 2**20, key: str = "encoder.main.0.weight") -> Path:
    """A torch.save archive rewritten with deflated entries: `values` float32 zeros in a file of a few hundred KB
    (torch.save never compresses; torch.load inflates such an entry all the same)."""
    plain = path.with_suffix(".plain")
    torch.save({"epoch": 1, "model": {key: torch.zeros(values)}}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()
    assert path.stat().st_size < values * 4 // 100
    return path


def test_the_converter_never_inflates_an_archive(tmp_path, capsys):
    from helpers import load_script

    convert = load_script("convert_reference_checkpoint")
    bomb = inflating_archive(tmp_path / "bomb.pth")
    assert torch.load(bomb, weights_only=True)["model"]["encoder.main.0.weight"].numel() == 32 * 2**20  # control
    code = convert.main(["--checkpoint_path", str(bomb), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and err.startswith("error: checkpoint"), err
    assert "declares 134,2" in err and "refusing to inflate" in err and str(bomb) in err, err
    assert not (tmp_path / "out").exists()


def test_weight_file_sizes_are_read_from_headers(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(10, 10)}, tmp_path / "ok.safetensors")
    check_weight_file(str(tmp_path / "ok.safetensors"))
    torch.save({"w": torch.zeros(1000)}, tmp_path / "ok.bin")
    check_weight_file(str(tmp_path / "ok.bin"))
    with pytest.raises(ValueError, match=r"declares 4,194,[0-9,]+ bytes of tensor data in a file of"):
        check_weight_file(str(inflating_archive(tmp_path / "bomb.bin", values=2**20)))
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match=r"junk\.safetensors' cannot be loaded: its header is unreadable"):
        check_weight_file(str(tmp_path / "junk.safetensors"))


def test_a_checkpoint_pickle_that_inflates_is_refused(tmp_path):
    from asintrovae_hf.training.checkpointing import check_checkpoint_files
    from asintrovae_hf.errors import CheckpointError

    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    inflating_archive(checkpoint / "optimizer.bin", values=2**22, key="state")
    with pytest.raises(CheckpointError, match=r"optimizer\.bin' declares 16,77[0-9,]+ bytes .*refusing to inflate"):
        check_checkpoint_files(str(checkpoint))
