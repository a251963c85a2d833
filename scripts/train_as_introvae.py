#!/usr/bin/env python
"""Train an introspective VAE on an image dataset.

    accelerate launch scripts/train_as_introvae.py --output_dir as-introvae-digits --max_train_steps 2000

See `python scripts/train_as_introvae.py --help` for every option; the loop lives in `asintrovae_hf.training.loop`.
"""

import sys

from asintrovae_hf.training.loop import main

if __name__ == "__main__":
    sys.exit(main())
