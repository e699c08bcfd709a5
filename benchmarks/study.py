"""The benchmark study from a checkout: the same as ``invdiff study`` (docs/benchmark-study.md).

    nice .venv/bin/python benchmarks/study.py smoke                 # seconds per cell
    nice .venv/bin/python benchmarks/study.py cpu --only reference --out docs/results/study/cpu
    python benchmarks/study.py gpu --out docs/results/study/gpu     # paper scale, on CUDA
"""

import sys

from invdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
