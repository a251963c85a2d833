#!/usr/bin/env python
"""Mutation check for the objective code's `.detach()` calls: every one of them must be guarded by a test.

    python scripts/check_detach_mutations.py            # from the repository root

For each `.detach()` call in `src/asintrovae_hf/objectives/introspective.py` and `training/train_step.py` (found with `tokenize`, so
comments and docstrings do not count), a copy of the package is written to a temporary directory with that one call
removed (`X.detach()` becomes `X`), and `python -m pytest -q -x tests/objectives/test_gradients.py` runs with `PYTHONPATH`
pointing at the copy. A mutation is *caught* when pytest fails (the unmutated copy must pass first). Two extra
mutations check the reference-code variant of the R_rec target (`detach_rec_target=False`): a detach added to its
branch, and the branches swapped. Exits 1 if any mutation survives. Takes a few minutes (one pytest run each).
"""

import io
import os
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "asintrovae_hf"
FILES = ["objectives/introspective.py", "training/train_step.py"]
TESTS = "tests/objectives/test_gradients.py"
TARGET = "rec.detach() if cfg.detach_rec_target else rec"
EXTRA = [  # (file, description, old, new): mutations of the reference-variant R_rec target
    ("objectives/introspective.py", "reference-variant target detached too", TARGET,
     "rec.detach() if cfg.detach_rec_target else rec.detach()"),
    ("objectives/introspective.py", "R_rec target branches swapped", TARGET, "rec if cfg.detach_rec_target else rec.detach()"),
]


def detach_calls(source):
    """`(line, start_col, end_col)` of each `.detach()` in code (0-based columns of the `.` and after the `)`)."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    return [(a.start[0], a.start[1], d.end[1]) for a, b, c, d in zip(toks, toks[1:], toks[2:], toks[3:])
            if (a.string, b.string, c.string, d.string) == (".", "detach", "(", ")")]


def run_tests(mutated_file, new_source):
    """Run the gradient tests against a package copy with `mutated_file` replaced; True if they fail."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(PACKAGE, Path(tmp) / "asintrovae_hf", ignore=shutil.ignore_patterns("__pycache__"))
        (Path(tmp) / "asintrovae_hf" / mutated_file).write_text(new_source)
        env = {**os.environ, "PYTHONPATH": tmp, "PYTHONDONTWRITEBYTECODE": "1"}
        find = "import importlib.util as u; print(u.find_spec('asintrovae_hf').origin)"
        where = subprocess.run([sys.executable, "-c", find], env=env, capture_output=True, text=True, cwd=ROOT)
        where = where.stdout.strip()
        assert where.startswith(tmp), f"the mutated copy is not the one imported ({where})"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", TESTS],
                              env=env, capture_output=True, text=True, cwd=ROOT)
        lines = proc.stdout.strip().splitlines() or [proc.stderr.strip()[-300:]]
        failed = [line for line in lines if line.startswith("FAILED")]
        why = [line for line in lines if line.startswith("E ")][:1]  # the first line of the assertion message
        return proc.returncode != 0, [line[:200] for line in failed + why + lines[-1:]]


def main():
    mutations = []
    for name in FILES:
        source = (PACKAGE / name).read_text()
        lines = source.splitlines(keepends=True)
        calls = detach_calls(source)
        print(f"{name}: {len(calls)} .detach() call(s) in code")
        for row, start, end in calls:
            line = lines[row - 1]
            assert line[start:end].replace(" ", "") == ".detach()", f"{name}:{row}: a .detach() split over lines"
            mutated = lines[: row - 1] + [line[:start] + line[end:]] + lines[row:]
            mutations.append((f"{name}:{row}: {line.strip()}", name, "".join(mutated)))
    for name, description, old, new in EXTRA:
        source = (PACKAGE / name).read_text()
        assert source.count(old) == 1, f"{name}: expected the line {old!r} once"
        mutations.append((f"{name}: {description}: {new}", name, source.replace(old, new)))

    failed, report = run_tests(FILES[0], (PACKAGE / FILES[0]).read_text())
    assert not failed, f"the tests fail on the unmutated code: {report}"
    print("unmutated code: tests pass")
    survived = 0
    for label, name, new_source in mutations:
        caught, report = run_tests(name, new_source)
        survived += not caught
        print("CAUGHT  " if caught else "SURVIVED", label)
        print(*(f"    {line}" for line in report), sep="\n", flush=True)
    print(f"{len(mutations) - survived} of {len(mutations)} mutations caught")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
