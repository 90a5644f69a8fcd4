#!/usr/bin/env bash
# GPU performance numbers of issue 6 in one go: E-I VGG-16, E-I ResNet-18 and BN VGG-16 at the
# paper's batch 128, T=4 (float32, each with its ANN ceiling), then bf16 convolutions and several
# seeds in one run (train.num_replicas). Runs go in priority order; each appends its JSON line as
# soon as it finishes, and the script stops itself before DEADLINE_S (default 570 s, inside the
# device tool's 600 s per command), so a short lease still returns the first rows. Expect each
# run with its ANN ceiling to take 2-3 minutes (two fresh processes, compiles included), so one
# call covers about runs 1-4; a second call `bash experiments/gpu_benchmark.sh 5` does the rest.
#
# The device image has JAX, flax, optax and orbax but not ml_collections. Fetch its wheel once,
# in the repo root of a machine with pip (pure Python; absl-py and PyYAML are on the image;
# .whl/ is git-ignored, so it travels only when carried):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl ml_collections==1.1.0
# Then run it there (device tool: carry [".whl"], timeout_s 600):
#   bash experiments/gpu_benchmark.sh [FIRST_RUN]
# Results: $OUT/benchmark_<device>.jsonl, gpu_benchmark.log and table.md when $OUT is set, else
# experiments/results/. Copy the JSONL into experiments/results/ and print the README table:
#   python -m experiments.benchmark --table experiments/results/benchmark_*.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
FIRST=${1:-1}
RESULTS=${OUT:-experiments/results}
DEADLINE_S=${DEADLINE_S:-570}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_benchmark.log"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
start=$(date +%s)

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import ml_collections" 2>/dev/null; then
  echo "ml_collections is missing: carry its wheel in .whl/ (see the header of $0)" | tee -a "$LOG"
  exit 2
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"; } 2>&1 | tee -a "$LOG"

# Eval batch 400: the configs' train.eval_batch_size (what the training loop evaluates with).
C="--batch 128 --eval_batch 400 --T 4"
RUNS=(
  # 1-3. The reference rows (float32), each with its ANN ceiling.
  "--config configs/ei_cifar10_vgg16.py $C --steps 20 --repeats 3 --warmup 3"
  "--config configs/ei_cifar10_resnet18.py $C --steps 20 --repeats 3 --warmup 3"
  "--config configs/bn_cifar10_vgg16.py $C --steps 20 --repeats 3 --warmup 3"
  # 4. Several seeds in one run: 4 vmapped replicas of E-I VGG-16 (img/s against run 1).
  "--config configs/ei_cifar10_vgg16.py $C --replicas 4 --steps 10 --repeats 2 --warmup 2 --noann"
  # 5-6. bf16 convolutions (the E-I division stays float32).
  "--config configs/ei_cifar10_vgg16.py $C --dtype bfloat16 --steps 20 --repeats 3 --warmup 3"
  "--config configs/ei_cifar10_resnet18.py $C --dtype bfloat16 --steps 20 --repeats 3 --warmup 3 --noann"
  # 7-8. The small quick-start model alone and as 8 vmapped seeds (where replicas pay off).
  "--config configs/default.py $C --steps 20 --repeats 3 --warmup 3 --noann"
  "--config configs/default.py $C --replicas 8 --steps 10 --repeats 2 --warmup 2 --noann"
)

for (( i = FIRST; i <= ${#RUNS[@]}; i++ )); do
  left=$(( DEADLINE_S - ($(date +%s) - start) ))
  if (( left < 90 )); then
    echo "[stopped before run $i: ${left}s left; continue with: bash $0 $i]" | tee -a "$LOG"
    break
  fi
  echo "== run $i [$(( $(date +%s) - start ))s] python -m experiments.benchmark ${RUNS[i-1]}" \
      | tee -a "$LOG"
  # shellcheck disable=SC2086  (word splitting of the run's arguments is intended)
  timeout $(( left - 20 )) $PY -m experiments.benchmark ${RUNS[i-1]} --out "$RESULTS/" \
      >>"$LOG" 2>&1 || echo "[run $i failed or timed out: exit $?]" | tee -a "$LOG"
done

echo "== finished after $(( $(date +%s) - start ))s" | tee -a "$LOG"
ls "$RESULTS"/benchmark_*.jsonl >/dev/null 2>&1 && \
  $PY -m experiments.benchmark --table "$RESULTS"/benchmark_*.jsonl | tee "$RESULTS/table.md"
