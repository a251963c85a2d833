"""Train an introspective VAE on an image dataset: the `asintrovae-train` command.

    asintrovae-train --output_dir as-introvae-digits --max_train_steps 2000          # one process
    asintrovae-train --config mnist --output_dir as-introvae-mnist                   # a shipped configuration
    accelerate launch -m asintrovae_hf.commands.train --config run.yaml              # Accelerate's launcher
    accelerate launch --multi_gpu --num_processes 8 -m asintrovae_hf.commands.train ...

`asintrovae-train --help` lists every option; the command line lives in `asintrovae_hf.training.cli`, the loop in
`asintrovae_hf.training.loop`.
"""

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    try:
        from ..training.cli import main as train_main
    except ImportError as err:  # a missing extra: one line naming it (`asintrovae_hf.errors.require`)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
