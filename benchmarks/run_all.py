"""Run every ``benchmarks/bench_*.py`` and the congruence report in turn; exit non-zero if any
misses its goal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    failed = []
    here = Path(__file__).parent
    for script in [*sorted(here.glob("bench_*.py")), here / "congruence_report.py"]:
        print(f"=== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"goals missed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
