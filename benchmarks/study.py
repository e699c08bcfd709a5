"""The benchmark study (issue 7): one command over problems x nets x samplers.

    nice .venv/bin/python benchmarks/study.py smoke                 # seconds per cell
    nice .venv/bin/python benchmarks/study.py cpu --only reference  # one problem, CPU scale
    python benchmarks/study.py gpu                                  # paper scale, on CUDA

Presets live in configs/study/; results go to docs/results/study/<preset>/ (see
docs/benchmark-study.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study.cli import main  # noqa: E402  (the package sits next to this file)

if __name__ == "__main__":
    sys.exit(main())
