"""The one reader of every JSON file this package reads: checkpoint states, `model_index.json`, model configurations,
run records, score files.

Python's `json` module parses arrays and objects recursively, so a file nested a few thousand levels deep ends in a
`RecursionError` (a traceback, not a message), and it reads any size it is given. [`read_json`] and [`loads`] refuse,
before parsing, a file larger than `max_bytes`, anything that is not a regular file (a FIFO would block the read) and
text nested deeper than `max_depth`; every refusal is a [`JsonFileError`] (a `ValueError`) of one line that names the
file, what was expected and what was found.

This module is also bundled into every code file of a saved pipeline (`pipelines/remote_code.py`), so that a pipeline
loaded without the package reads its JSON files with the same limits: it imports only the standard library.
"""

import json
import os
import re
from typing import Any, Iterator, Optional, Tuple

MAX_BYTES = 16 * 1024 * 1024  # the largest JSON file the package writes is a run's records: a few hundred KiB
MAX_DEPTH = 32  # the deepest file the package writes (a training state, a model card's record) is 4 levels deep

# A JSON string (the only place where brackets do not nest), and the brackets outside strings.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class JsonFileError(ValueError):
    """A JSON file that is too large, too deeply nested, not a regular file, or not valid JSON."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside strings not counted); linear, no
    recursion."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads(text, where: str = "JSON text", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          expect: Optional[type] = None) -> Any:
    """
    `json.loads(text)` within the limits: `text` (str or bytes) of at most `max_bytes` bytes, nested at most
    `max_depth` deep, and of type `expect` when given (e.g. `dict`); otherwise a one-line [`JsonFileError`] starting
    with `where`.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonFileError(f"{where}: expected UTF-8 JSON text, got undecodable bytes ({err.reason} at byte "
                                f"{err.start}).") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonFileError(f"{where}: expected JSON nested at most {max_depth} levels deep, got {depth:,} levels; "
                            f"not parsed.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise JsonFileError(f"{where}: expected valid JSON, got {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}.") from None
    if expect is not None and not isinstance(value, expect):
        raise JsonFileError(f"{where}: expected a JSON {_kind(expect)}, got a JSON {_kind(type(value))}.")
    return value


def read_json(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              expect: Optional[type] = None) -> Any:
    """
    Read the JSON file `path` through [`loads`]'s limits. It must be a regular file (a symlink to one is followed, as
    in the Hub cache); `what` names it in messages (default: the path). A missing file raises `FileNotFoundError`,
    as `open` does; every other refusal is a [`JsonFileError`].
    """
    path = os.fspath(path)
    where = what or path
    if os.path.exists(path) and not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file (FIFO, device or "
                            f"socket).")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since it was measured
    return loads(data, where, max_bytes, max_depth, expect)


def read_json_lines(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                    skip_invalid: bool = True) -> Iterator[Tuple[int, Any]]:
    """
    `(line number, value)` for each non-empty line of the JSON Lines file `path` (a file of at most `max_bytes`, each
    line within `max_depth`). With `skip_invalid`, a line that is not valid JSON (the torn last line of a killed
    writer) is skipped; a line nested too deep is always refused.
    """
    path = os.fspath(path)
    where = what or path
    if not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file.")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON lines, got {size:,} bytes.")
    with open(path, "rb") as f:
        lines = f.read(max_bytes + 1).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, loads(line, f"{where} line {number}", max_bytes, max_depth)
        except JsonFileError as err:
            if not skip_invalid or "expected valid JSON" not in str(err):
                raise


def _kind(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(t, t.__name__)
