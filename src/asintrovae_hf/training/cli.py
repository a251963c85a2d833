"""The command line of `asintrovae-train` (`asintrovae_hf.commands.train`): parse, train, and turn expected failures
and stops into one line and an exit status.
"""

import json
import logging
import os
import shlex
import sys
from typing import List, Optional

from ..errors import EXPECTED_ERRORS, one_line, require

require("accelerate", "datasets", "tqdm", purpose="Training")  # at import: `commands.train` prints it in one line

from .args import parse_args  # noqa: E402
from .faults import PREEMPTED_EXIT_CODE, LostRankError, OutputWriteError, Preempted  # noqa: E402

logger = logging.getLogger("asintrovae_hf.training")


def resume_command(argv: Optional[List[str]]) -> str:
    """The command line of this run with `--resume_from_checkpoint latest` (launcher options are the user's)."""
    args, words, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for word in args:
        if skip:
            skip = False
        elif word == "--resume_from_checkpoint":
            skip = True
        elif not word.startswith("--resume_from_checkpoint="):
            words.append(word)
    script = sys.argv[0] if argv is None else "scripts/train_as_introvae.py"
    launcher = "accelerate launch <the same launcher options> " if int(os.environ.get("WORLD_SIZE", "1")) > 1 \
        else "python "
    return launcher + shlex.join([script, *words, "--resume_from_checkpoint", "latest"])


def main(argv: Optional[List[str]] = None) -> int:
    """
    Command-line entry point: expected failures print one clear line instead of a traceback (exit status 1); a stop
    on SIGTERM / SIGUSR1 exits with `PREEMPTED_EXIT_CODE` (75) after writing a checkpoint.
    """
    from .loop import train  # loop.py re-exports this module's `main`

    config = parse_args(argv)
    try:
        summary = train(config)
    except Preempted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"Preempted: {stop} Exiting with status {PREEMPTED_EXIT_CODE}; to continue, run "
                  f"{resume_command(argv)}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except LostRankError as err:
        # the process group cannot be shut down cleanly with a peer gone (its destructor may wait on it): exit now
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    except EXPECTED_ERRORS + (OutputWriteError,) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    logger.info("Done in %.1f s: %s", summary["seconds"], json.dumps(summary.get("final_losses", {})))
    return 0

