"""Every benchmark script starts and explains itself: ``--help`` prints its usage and exits 0
(the pytest-benchmark modules, run by ``make bench``, and imported helpers are not scripts).

A script that reads a moved preset or parses ``sys.argv`` by hand fails here instead of in
front of a user who wants to rerun a published table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py")
                 if 'if __name__ == "__main__"' in p.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_answers_help(script):
    res = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                         capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower(), res.stdout[:500]
