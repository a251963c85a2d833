#!/usr/bin/env python
"""`asintrovae-demo` under its old name: `python scripts/demo.py ARGS` runs `asintrovae-demo ARGS` (the same options).

The command lives in `asintrovae_hf.commands.demo`; this shim keeps the commands in the docs and results working.
"""

import sys

from asintrovae_hf.commands import demo as _command

globals().update({name: value for name, value in vars(_command).items() if not name.startswith("__")})

if __name__ == "__main__":
    sys.exit(_command.main())
