#!/usr/bin/env python
"""`asintrovae-push-space` under its old name: `python scripts/push_space.py ARGS` runs `asintrovae-push-space ARGS` (the same options).

The command lives in `asintrovae_hf.commands.push_space`; this shim keeps the commands in the docs and results working.
"""

import sys

from asintrovae_hf.commands import push_space as _command

globals().update({name: value for name, value in vars(_command).items() if not name.startswith("__")})

if __name__ == "__main__":
    sys.exit(_command.main())
