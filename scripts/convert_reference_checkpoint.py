#!/usr/bin/env python
"""`asintrovae-convert` under its old name: `python scripts/convert_reference_checkpoint.py ARGS` runs `asintrovae-convert ARGS` (the same options).

The command lives in `asintrovae_hf.commands.convert`; this shim keeps the commands in the docs and results working.
"""

import sys

from asintrovae_hf.commands import convert as _command

globals().update({name: value for name, value in vars(_command).items() if not name.startswith("__")})

if __name__ == "__main__":
    sys.exit(_command.main())
