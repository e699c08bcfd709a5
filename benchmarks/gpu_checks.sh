#!/usr/bin/env bash
# The checks to run on a CUDA GPU machine, as one script (docs/gpu.md): the CUDA tests
# (`pytest -k cuda`: nets, samplers, FEM and OCE torch backends, training, `invdiff run`),
# paper-scale net throughput, the FEM's torch backend against scipy, then the study's `gpu`
# preset on the reference problem with a shortened training, until the time budget runs out.
#
#   OUT=runs/gpu BUDGET_S=470 bash benchmarks/gpu_checks.sh
#
# Python packages missing on the GPU machine (pydantic and its needs) travel as wheels in .whl/
# (see docs/gpu.md); without .whl/ the current environment is used as it is.
set -u
OUT=${OUT:-runs/gpu}
BUDGET_S=${BUDGET_S:-470}       # the whole script ends within this many seconds
STUDY_STEPS=${STUDY_STEPS:-1000}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) [${SECONDS}s] $*"; }
left() { echo $((BUDGET_S - SECONDS)); }

if [ -d .whl ]; then
  log "install: carried wheels + invdiff and its plugins (no index, no deps) into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --target /tmp/site .whl/*.whl . plugins/invdiff-* || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

log "CUDA tests"
timeout 180 python3 -m pytest -k cuda -q -rs \
  --continue-on-collection-errors 2>&1 | tail -40 | tee "$OUT/tests-cuda.txt"

log "net throughput, paper widths, 64 x 64"
timeout 120 python3 benchmarks/bench_nets.py --device cuda --scale paper --grids 64 \
  --train-batch 64 --rounds 3 --out "$OUT/nets-throughput-gpu.md"

log "FEM: torch backend on CUDA against scipy on one CPU core"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 timeout 90 python3 benchmarks/bench_fem.py \
  --device cuda --grids 32 64 --fields 64 --repeats 2 | tee "$OUT/fem-backends-gpu.md"

log "study, gpu preset, reference problem, training shortened to $STUDY_STEPS steps"
timeout "$(left)" python3 benchmarks/study.py gpu --only reference --no-peer --quiet \
  --set base.training.steps="$STUDY_STEPS" --set base.training.val_every=500 \
  --set base.training.checkpoint_every=500 --set base.data.n_test=2 \
  --out "$OUT/study" --runs /tmp/study-runs
log "study ended with status $?"
# the tables and figures, and each training's history (not the checkpoints or the data)
tar czf "$OUT/study.tgz" "$OUT/study" \
  $(find /tmp/study-runs -name '*.json' 2>/dev/null) 2>/dev/null
log done
