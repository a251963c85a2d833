#!/usr/bin/env python
"""`asintrovae-train` under its old name: `accelerate launch scripts/train_as_introvae.py ARGS` runs the same training
as `accelerate launch -m asintrovae_hf.commands.train ARGS` (the same options; see `asintrovae-train --help`).

The loop lives in `asintrovae_hf.training.loop`; this shim keeps the commands in the docs and results working.
"""

import sys

from asintrovae_hf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
