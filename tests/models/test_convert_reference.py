"""Converting the authors' reference checkpoints (Soft-IntroVAE, AS-IntroVAE) into a saved AsIntroVAEPipeline.

The reference networks are rebuilt below as small `torch.nn` modules with the module tree (attribute names, layer
order, kernel sizes, bias flags) the reference sources define:

- Soft-IntroVAE, github.com/taldatech/soft-intro-vae-pytorch, `soft_intro_vae/train_soft_intro_vae.py`: classes
  `ResidualBlock`, `Encoder`, `Decoder`, `SoftIntroVAE`; `save_checkpoint` writes `{"epoch", "model": state_dict()}`.
- AS-IntroVAE, github.com/LOUEY233/AS-IntroVAE, `arch.py` (`ResidualBlock`, `Encoder`, `Decoder`) and `models.py`
  (`SoftIntroVAE`); `S_VAE.py` / `I_VAE.py` / `A_VAE.py` wrap `model.encoder` and `model.decoder` in
  `nn.DataParallel` one by one, so the state dict reads `encoder.module.*` / `decoder.module.*`.

Resulting key layout (without `module.`), n = number of block widths, S = image size:
`encoder.main.0.weight` (5x5 conv, no bias), `encoder.main.1.*` (BatchNorm), `encoder.main.res_in_{S/2}.*`, ...,
`encoder.main.res_in_{S/2**n}.*` (residual blocks: `conv_expand.weight` when widths differ, `conv1.weight`, `bn1.*`,
`conv2.weight`, `bn2.*`), `encoder.fc.{weight,bias}`; `decoder.fc.0.{weight,bias}`, `decoder.main.res_in_4.*`,
`decoder.main.res_in_8.*`, ..., `decoder.main.res_in_{4*2**n}.*`, `decoder.main.predict.{weight,bias}`.
"""

import importlib.util
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.models.convert_reference import convert_reference_state_dict

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "convert_reference_checkpoint.py"

# (image channels, image size, block widths, latent size)
CONFIGS = {
    "1ch-16px": (1, 16, (8, 16), 4),
    "3ch-32px": (3, 32, (8, 16, 32), 6),
    "1ch-28px-equal-widths": (1, 28, (8, 8), 3),
}


def load_script():
    spec = importlib.util.spec_from_file_location("convert_reference_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_script = load_script()


# ---- the reference architecture, rebuilt (module names and order as in the reference sources) -----------------


class RefResidualBlock(nn.Module):
    """3x3 conv, BN, LeakyReLU(0.2), 3x3 conv, BN, add the skip (1x1 conv when widths differ), LeakyReLU(0.2)."""

    def __init__(self, inc, outc):
        super().__init__()
        self.conv_expand = nn.Conv2d(inc, outc, 1, 1, 0, bias=False) if inc != outc else None
        self.conv1 = nn.Conv2d(inc, outc, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outc)
        self.relu1 = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(outc, outc, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outc)
        self.relu2 = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        skip = x if self.conv_expand is None else self.conv_expand(x)
        h = self.relu1(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu2(h + skip)


class RefEncoder(nn.Module):
    def __init__(self, cdim, zdim, channels, image_size):
        super().__init__()
        cc = channels[0]
        self.main = nn.Sequential(nn.Conv2d(cdim, cc, 5, 1, 2, bias=False), nn.BatchNorm2d(cc), nn.LeakyReLU(0.2),
                                  nn.AvgPool2d(2))
        sz = image_size // 2
        for ch in channels[1:]:
            self.main.add_module(f"res_in_{sz}", RefResidualBlock(cc, ch))
            self.main.add_module(f"down_to_{sz // 2}", nn.AvgPool2d(2))
            cc, sz = ch, sz // 2
        self.main.add_module(f"res_in_{sz}", RefResidualBlock(cc, cc))
        self.conv_output_size = (cc, sz, sz)  # what the reference measures with a dummy forward pass
        self.fc = nn.Linear(cc * sz * sz, 2 * zdim)

    def forward(self, x):
        mu, logvar = self.fc(self.main(x).view(x.size(0), -1)).chunk(2, dim=1)
        return mu, logvar


class RefDecoder(nn.Module):
    def __init__(self, cdim, zdim, channels, conv_input_size):
        super().__init__()
        cc = channels[-1]
        self.conv_input_size = conv_input_size
        self.fc = nn.Sequential(nn.Linear(zdim, conv_input_size[0] * conv_input_size[1] * conv_input_size[2]),
                                nn.ReLU(True))
        sz = 4  # the reference names decoder blocks from 4 up, whatever the real feature-map size
        self.main = nn.Sequential()
        for ch in channels[::-1]:
            self.main.add_module(f"res_in_{sz}", RefResidualBlock(cc, ch))
            self.main.add_module(f"up_to_{sz * 2}", nn.Upsample(scale_factor=2, mode="nearest"))
            cc, sz = ch, sz * 2
        self.main.add_module(f"res_in_{sz}", RefResidualBlock(cc, cc))
        self.main.add_module("predict", nn.Conv2d(cc, cdim, 5, 1, 2))

    def forward(self, z):
        return self.main(self.fc(z).view(z.size(0), *self.conv_input_size))


class RefModel(nn.Module):
    def __init__(self, cdim, zdim, channels, image_size):
        super().__init__()
        self.encoder = RefEncoder(cdim, zdim, channels, image_size)
        self.decoder = RefDecoder(cdim, zdim, channels, self.encoder.conv_output_size)


def make_reference(config, seed=0):
    cdim, size, channels, zdim = CONFIGS[config] if isinstance(config, str) else config
    torch.manual_seed(seed)
    model = RefModel(cdim, zdim, list(channels), size)
    with torch.no_grad():  # random BN affine parameters and statistics, so that a mix-up changes the outputs
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ())))
            elif isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.normal_(0, 0.2)
    return model.eval()


def checkpoint_of(model, layout):
    """The object a reference run would torch.save, for each layout."""
    if layout == "soft-introvae":  # save_checkpoint in train_soft_intro_vae.py
        return {"epoch": 7, "model": model.state_dict()}
    if layout == "soft-introvae-bare":
        return model.state_dict()
    if layout == "soft-introvae-dataparallel":  # the whole model in nn.DataParallel: module.encoder.*
        return {"epoch": 7, "model": nn.DataParallel(model).state_dict()}
    if layout in ("as-introvae", "as-introvae-bare"):  # S_VAE.py / A_VAE.py: encoder.module.*, decoder.module.*
        wrapped = RefModel.__new__(RefModel)
        nn.Module.__init__(wrapped)
        wrapped.encoder = nn.DataParallel(model.encoder)
        wrapped.decoder = nn.DataParallel(model.decoder)
        state_dict = wrapped.state_dict()
        assert any(k.startswith("encoder.module.main.") for k in state_dict)
        return state_dict if layout.endswith("bare") else {"epoch": 7, "model": state_dict}
    raise AssertionError(layout)


def convert(tmp_path, checkpoint, *extra):
    path = tmp_path / "reference.pth"
    torch.save(checkpoint, path)
    out = tmp_path / "pipeline"
    code = convert_script.main(["--checkpoint_path", str(path), "--output_dir", str(out), *extra])
    return code, out


def assert_same_outputs(reference, pipe, cdim, size, zdim):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, cdim, size, size, generator=gen)
    z = torch.randn(3, zdim, generator=gen)
    assert not pipe.encoder.training and not pipe.decoder.training
    with torch.no_grad():
        mu_ref, logvar_ref = reference.encoder(x)
        mu, logvar = pipe.encoder(x)
        posterior = pipe.encoder.encode(x).latent_dist
        image_ref, image = reference.decoder(z), pipe.decoder(z)
    tol = dict(rtol=1e-5, atol=1e-6)
    assert mu.shape == (3, zdim) and image.shape == (3, cdim, size, size)
    assert torch.allclose(mu, mu_ref, **tol) and torch.allclose(logvar, logvar_ref, **tol)
    assert torch.allclose(posterior.mean, mu_ref, **tol)
    assert torch.allclose(image, image_ref, **tol)
    assert logvar.std() > 0 and image.std() > 0


@pytest.mark.parametrize(
    "config,layout",
    [("1ch-16px", layout) for layout in ("soft-introvae", "soft-introvae-bare", "soft-introvae-dataparallel",
                                         "as-introvae", "as-introvae-bare")]
    + [("3ch-32px", "soft-introvae"), ("3ch-32px", "as-introvae"), ("1ch-28px-equal-widths", "as-introvae")],
)
def test_converted_pipeline_matches_reference(tmp_path, config, layout):
    cdim, size, channels, zdim = CONFIGS[config]
    reference = make_reference(config)
    code, out = convert(tmp_path, checkpoint_of(reference, layout))
    assert code == 0
    pipe = AsIntroVAEPipeline.from_pretrained(out)
    assert isinstance(pipe.encoder, AsIntroVAEEncoder) and isinstance(pipe.decoder, AsIntroVAEDecoder)
    for model in (pipe.encoder, pipe.decoder):
        assert model.config.sample_size == size and model.config.latent_dim == zdim
        assert tuple(model.config.block_out_channels) == channels
    assert pipe.encoder.config.in_channels == cdim and pipe.decoder.config.out_channels == cdim
    assert pipe.decoder.config.output_activation is None
    # BatchNorm statistics came across too (eval-mode outputs below depend on them; this names the culprit)
    assert torch.equal(pipe.encoder.norm_in.running_var, reference.encoder.main[1].running_var)
    assert int(pipe.decoder.up_blocks[0].resnet.norm2.num_batches_tracked) == int(
        reference.decoder.main.res_in_4.bn2.num_batches_tracked)
    assert_same_outputs(reference, pipe, cdim, size, zdim)


def test_library_conversion_reports_layout_and_checks_sample_size():
    reference = make_reference("1ch-16px")
    encoder, decoder, config = convert_reference_state_dict(checkpoint_of(reference, "as-introvae"), sample_size=16)
    assert config.layout == "as-introvae" and config.sample_size == 16 and config.block_out_channels == (8, 16)
    _, _, config = convert_reference_state_dict(checkpoint_of(reference, "soft-introvae-dataparallel"))
    assert config.layout == "soft-introvae"
    with pytest.raises(ValueError, match=r"sample_size=32 was given, but the weights imply sample_size=16"):
        convert_reference_state_dict(checkpoint_of(reference, "soft-introvae"), sample_size=32)


def _unknown_key(sd):
    sd["decoder.main.res_in_8.extra.weight"] = torch.zeros(3)


def _missing_key(sd):
    del sd["encoder.main.res_in_4.bn1.running_var"]


def _wrong_shape(sd):
    sd["decoder.main.predict.weight"] = torch.zeros(2, 8, 5, 5)


def _skip_on_equal_widths(sd):  # a 1x1 skip where the reference's widths are equal: the package has none there
    sd["encoder.main.res_in_4.conv_expand.weight"] = torch.zeros(16, 16, 1, 1)


def _conditional_fc(sd):  # the conditional reference model: fc takes 10 extra inputs
    sd["encoder.fc.weight"] = torch.zeros(8, 16 * 4 * 4 + 10)


def _extra_top_level(sd):
    return {"model": sd, "optimizer": {"state": {}}}


@pytest.mark.parametrize(
    "edit,message",
    [
        (_unknown_key, r"unexpected key for a reference model with block_out_channels=\(8, 16\), sample_size=16: "
                       r"decoder\.main\.res_in_8\.extra\.weight\.$"),
        (_missing_key, r"missing key for a reference model .*: encoder\.main\.res_in_4\.bn1\.running_var\.$"),
        (_wrong_shape, r"shape mismatch for 'decoder\.main\.predict\.weight' \(package decoder 'conv_out\.weight'\): "
                       r"expected \(1, 8, 5, 5\), got \(2, 8, 5, 5\)\.$"),
        (_skip_on_equal_widths, r"unexpected key .*: encoder\.main\.res_in_4\.conv_expand\.weight \(a 1x1 skip "
                                r"convolution in a block whose input and output channels are equal"),
        (_conditional_fc, r"'encoder\.fc\.weight' takes 266 inputs, which is not 16 \* s \* s"),
        (_extra_top_level, r"unexpected top-level entry next to 'model': optimizer"),
    ],
)
def test_bad_checkpoints_are_refused_with_one_line(tmp_path, capsys, edit, message):
    state_dict = make_reference("1ch-16px").state_dict()
    checkpoint = edit(state_dict) or {"epoch": 1, "model": state_dict}
    code, out = convert(tmp_path, checkpoint)
    err = capsys.readouterr().err.strip()
    assert code == 1 and not out.exists()
    assert "\n" not in err and err.startswith("error: "), err
    assert re.search(message, err), err


def test_image_size_the_package_cannot_represent_is_refused(tmp_path, capsys):
    # 36 px with three halvings: the reference floors 36 -> 18 -> 9 -> 4; the package would need 32 px
    reference = make_reference((3, 36, (8, 16, 32), 6))
    code, _ = convert(tmp_path, checkpoint_of(reference, "soft-introvae"))
    err = capsys.readouterr().err
    assert code == 1
    assert "(res_in_18, res_in_9, res_in_4) say it was built for 36x36 or 37x37 images" in err
    assert "its fc layer fits 32x32" in err and "multiple of 8" in err


class Payload:
    """Unpickling this runs `exec`, which writes `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def write_evil_checkpoint(tmp_path):
    # control: the payload does run when unpickled without restrictions
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()
    marker, path = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save({"epoch": 1, "model": make_reference("1ch-16px").state_dict(), "extra": Payload(marker)}, path)
    return path, marker


def assert_refused_pickle(err):
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: refused to load") and "exec" in err and "weights_only=True" in err, err


def test_code_executing_pickle_is_refused_and_never_run(tmp_path, capsys):
    path, marker = write_evil_checkpoint(tmp_path)
    out = tmp_path / "pipeline"
    code = convert_script.main(["--checkpoint_path", str(path), "--output_dir", str(out)])
    assert code == 1
    assert_refused_pickle(capsys.readouterr().err.strip())
    assert not marker.exists() and not out.exists()


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers: 5-15 s
def test_command_line_refuses_code_executing_pickle(tmp_path):
    path, marker = write_evil_checkpoint(tmp_path)
    out = tmp_path / "pipeline"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint_path", str(path), "--output_dir", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert_refused_pickle(result.stderr.strip())
    assert not marker.exists() and not out.exists()


def test_missing_and_unreadable_files(tmp_path, capsys):
    code = convert_script.main(["--checkpoint_path", str(tmp_path / "nope.pth"), "--output_dir", str(tmp_path / "o")])
    assert code == 1 and "does not exist" in capsys.readouterr().err
    for junk in (b"not a checkpoint", b"junk", b""):
        (tmp_path / "junk.pth").write_bytes(junk)
        code = convert_script.main(["--checkpoint_path", str(tmp_path / "junk.pth"), "--output_dir",
                                    str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 1 and err.startswith("error: ") and "\n" not in err, err
        assert "cannot read" in err and "refused" not in err, err
