r"""Convert a Soft-IntroVAE or AS-IntroVAE reference checkpoint (.pth) into a saved AsIntroVAEPipeline.

    asintrovae-convert --checkpoint_path saves/cifar10_model_epoch_150.pth \
        --output_dir as-introvae-cifar10
    asintrovae-convert --checkpoint_path X.pth --output_dir DIR \
        --push_to_hub --hub_model_id user/as-introvae-cifar10

The configuration (channels, block widths, latent size, image size) is read off the weights; `--sample_size` only
checks it. The file is read with `torch.load(weights_only=True)`: a pickle that would run code is refused.
See `asintrovae_hf.models.convert_reference` for the name mapping.
"""

import argparse
import sys

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.models.convert_reference import convert_reference_state_dict, load_reference_checkpoint
from asintrovae_hf.errors import one_line
from asintrovae_hf.hub import HubError, push_to_hub


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="asintrovae-convert", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint_path", required=True, help="The reference .pth file (torch.save of {'model': ...}).")
    p.add_argument("--output_dir", required=True, help="Where save_pretrained writes the pipeline.")
    p.add_argument("--sample_size", type=int, default=None,
                   help="Image size; read off the weights, so this only checks it.")
    p.add_argument("--push_to_hub", action="store_true", help="Upload output_dir to --hub_model_id afterwards.")
    p.add_argument("--hub_model_id", default=None, help="'name' or 'namespace/name' (with --push_to_hub).")
    args = p.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        checkpoint = load_reference_checkpoint(args.checkpoint_path)
        encoder, decoder, config = convert_reference_state_dict(checkpoint, sample_size=args.sample_size)
        pipeline = AsIntroVAEPipeline(encoder=encoder.eval(), decoder=decoder.eval())
        pipeline.save_pretrained(args.output_dir)
        print(
            f"converted {config.layout} checkpoint {args.checkpoint_path}: in_channels={config.in_channels}, "
            f"sample_size={config.sample_size}, latent_dim={config.latent_dim}, "
            f"block_out_channels={config.block_out_channels} -> {args.output_dir}"
        )
        if args.push_to_hub:
            url = push_to_hub(args.output_dir, args.hub_model_id)
            print(f"uploaded to {url}")
    except (ValueError, OSError, HubError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
