"""The package's error types and the helpers that turn expected failures into one clear line.

Entry points (the commands of `asintrovae_hf.commands`, `asintrovae_hf.training.loop.main`) print an expected failure as `error: <one line>` and exit
with status 1; anything else (a bug) keeps its traceback.
"""

import functools
import importlib
import importlib.util
import re
from typing import Tuple


class UsageError(RuntimeError):
    """
    An expected failure caused by the options or the environment (bad option values, data that cannot be found or
    reached, a missing package or compiler, an output folder that cannot be written).
    """


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt, unsafe to load, or that cannot be written."""


class HubError(RuntimeError):
    """A Hub operation failed (no network, offline mode, no or bad token): the message says what to check."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


EXPECTED_ERRORS = (UsageError, CheckpointError, HubError, NonFiniteLossError)


# Terminal escape sequences (torch colours its advice) and other control characters: never part of a message.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")
MESSAGE_LIMIT = 2000  # characters: an error line never grows with the size of the input that caused it


def one_line(err: BaseException, limit: int = MESSAGE_LIMIT) -> str:
    """
    The error's message on one line (its type name when it has none), without terminal escape codes, cut to `limit`
    characters (`0`: no limit).
    """
    text = " ".join(_ESCAPES.sub(" ", str(err)).split()) or type(err).__name__
    return text if not limit or len(text) <= limit else text[: limit - 3] + "..."


def unpickling_detail(err: BaseException) -> str:
    """
    What `torch.load(weights_only=True)` refused, on one line: `Unsupported global: GLOBAL builtins.exec was not an
    allowed global by default`, without torch's advice on allow-listing it (nor its colour codes); the first line of
    the message for other failures.
    """
    text = _ESCAPES.sub("", str(err))
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line]  # torch's other wording: "Trying to load unsupported GLOBAL"
    detail = " ".join((match.group(1) if match else named[0] if named else lines[0] if lines else "").split())
    if match or named:
        detail = re.split(r"\. (?:Please|Check|To )", detail)[0].rstrip(".")
    return (detail if len(detail) <= 300 else detail[:297] + "...") or type(err).__name__


@functools.lru_cache(maxsize=None)
def network_errors() -> Tuple[type, ...]:
    """Exceptions that mean the Hub could not be reached or refused us, whichever HTTP library huggingface_hub uses."""
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError, OfflineModeIsEnabled

    errors = [HfHubHTTPError, OfflineModeIsEnabled, LocalTokenNotFoundError, HFValidationError, ConnectionError,
              TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests.exceptions", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


# The optional dependency groups of `pyproject.toml`: which extra brings which package.
EXTRAS = {"accelerate": "train", "datasets": "train", "tensorboard": "train", "tqdm": "train", "sklearn": "train",
          "mlxtend": "train", "scipy": "eval", "torchmetrics": "fid", "torch_fidelity": "fid"}


def require(*modules: str, purpose: str, extra: str = None) -> None:
    """
    Raise an `ImportError` naming the extra to install when one of `modules` is missing, e.g.
    `require("accelerate", "datasets", purpose="Training")`.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extras = [extra] if extra else sorted({EXTRAS.get(m, "train") for m in missing})
        names = ", ".join("scikit-learn" if m == "sklearn" else m for m in missing)
        raise ImportError(
            f"{purpose} needs {names}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'asintrovae-hf[{','.join(extras)}]'"
        )
