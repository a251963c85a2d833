#!/usr/bin/env python
"""Convert models built with the authors' own classes and compare their outputs with the converted pipeline's.

    git clone <the authors' AS-IntroVAE repository> /tmp/asintrovae-ref
    python scripts/check_reference_conversion.py --reference_path /tmp/asintrovae-ref

For each configuration: the reference's `SoftIntroVAE` (random weights, BatchNorm statistics from three training-mode
batches) saved as its `save_checkpoint` saves it (`{"epoch", "model": state_dict}`, optionally with DataParallel's
`module.` prefixes), converted by `scripts/convert_reference_checkpoint.py` in a separate process, loaded with
`AsIntroVAEPipeline.from_pretrained`; prints the largest absolute differences of the encoder's `mu`/`logvar` and of the
decoder's images in eval mode. Nothing of the reference is copied here: it is imported from the checkout.
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import torch

from asintrovae_hf import AsIntroVAEPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark import _reference_import_path  # noqa: E402 - the same stand-ins as the speed comparison

CONFIGS = [  # (image channels, size, block channels, z, DataParallel prefixes)
    (1, 28, (64, 128), 32, False),
    (3, 32, (64, 128, 256), 128, True),
    (3, 64, (32, 64, 128, 256), 64, False),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference_path", required=True, help="A checkout of the authors' AS-IntroVAE code.")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.reference_path, "models.py")):
        p.error(f"--reference_path {args.reference_path!r} holds no models.py: give a checkout of the authors' code.")
    with _reference_import_path(args.reference_path):
        importlib.import_module("utils")  # the reference's utils and models import each other; utils first
        reference_models = importlib.import_module("models")
    torch.manual_seed(0)
    print("| image channels | size | blocks | z | `module.` prefixes | max abs diff, encoder (mu, logvar) | "
          "max abs diff, decoder |\n| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for cdim, size, channels, zdim, data_parallel in CONFIGS:
            model = reference_models.SoftIntroVAE(cdim=cdim, zdim=zdim, channels=channels, image_size=size).train()
            with torch.no_grad():
                for _ in range(3):
                    model(torch.rand(16, cdim, size, size))
            state = model.state_dict()
            if data_parallel:
                state = {"module." + k: v for k, v in state.items()}
            path, out = os.path.join(tmp, f"ref{size}.pth"), os.path.join(tmp, f"converted{size}")
            torch.save({"epoch": 100, "model": state}, path)
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convert_reference_checkpoint.py")
            subprocess.run([sys.executable, script, "--checkpoint_path", path, "--output_dir", out], check=True,
                           capture_output=True)
            pipe = AsIntroVAEPipeline.from_pretrained(out)
            model.eval()
            x, z = torch.rand(8, cdim, size, size), torch.randn(8, zdim)
            with torch.no_grad():
                (mu_ref, logvar_ref), images_ref = model.encode(x), model.decode(z)
                (mu, logvar), images = pipe.encoder(x), pipe.decoder(z)
            enc = max((mu - mu_ref).abs().max().item(), (logvar - logvar_ref).abs().max().item())
            dec = (images - images_ref).abs().max().item()
            print(f"| {cdim} | {size} | {','.join(map(str, channels))} | {zdim} | {'yes' if data_parallel else 'no'} "
                  f"| {enc:.1e} | {dec:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
