#!/usr/bin/env python
"""`asintrovae-toy2d` under its old name: `python scripts/toy2d.py ARGS` runs `asintrovae-toy2d ARGS` (the same options).

The command lives in `asintrovae_hf.commands.toy2d`; this shim keeps the commands in the docs and results working.
"""

import sys

from asintrovae_hf.commands import toy2d as _command

globals().update({name: value for name, value in vars(_command).items() if not name.startswith("__")})

if __name__ == "__main__":
    sys.exit(_command.main())
