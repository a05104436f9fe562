"""Real helm and kubectl binaries for the packaging tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "qdrant-librarian"


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        if os.environ.get("LIBRARIAN_SKIP_TOOLS") == "1":
            pytest.skip(f"{name} not installed and LIBRARIAN_SKIP_TOOLS=1")
        pytest.fail(f"{name} is not installed: run `make tools`")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)
