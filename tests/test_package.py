"""The package's metadata: the version users see is the one pyproject.toml declares."""

import re
from pathlib import Path

import asintrovae_hf


def test_version_is_the_one_pyproject_declares():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert asintrovae_hf.__version__ == declared
