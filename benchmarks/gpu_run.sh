#!/usr/bin/env bash
# The GPU figures of docs/engine.md ("The GPU path"), in one call on a machine with a GPU:
#
#   benchmarks/gpu_run.sh CIFAR10_ROOT OUTDIR [SECONDS]
#
# CIFAR10_ROOT: CIFAR-10 as `diffnas search --dataset cifar10 --data-root` takes it (a
# directory or .tar.gz). Runs with the python3 on PATH and this checkout's src/ (no install;
# needs torch, numpy, PyYAML, Rich, Pillow). Stages, each under its own time limit, all
# inside SECONDS (default 560):
#   1. a tiny nb201 search step on the device: stops here if the CUDA path fails;
#   2. eager step rows (benchmarks/gpu_speed.py, --profile: device busy time, kernels);
#   3. the whole step captured as one CUDA graph and replayed, against eager
#      (benchmarks/gpu_graph_step.py: what the launches cost);
#   4. compiled rows (bf16 autocast + compiled cells, mode reduce-overhead: CUDA graphs);
#   5. the nb201 DARTS search (configs/darts_nb201.yaml: C=16, 5 cells per stage, batch 64,
#      50 epochs) on CIFAR-10 with the faster eager precision of stage 2; when it cannot
#      finish in the time left, its per-epoch times are what it reports.
# Overrides for a quick check on a CPU: DEVICE=cpu LAYERS=1 STEPS=2 EAGER=... COMPILED=...
# EPOCHS=1 EXTRA="--set data.subset=0.02".
set -u
data=$1
out=$2
budget=${3:-560}
device=${DEVICE:-cuda}
steps=${STEPS:-10}
layers=${LAYERS:+--layers $LAYERS}
eager=${EAGER:-nb201:engine:64,nb201:bf16:64,darts:engine:64,darts:bf16:64,nb201:plain:64}
graph=${GRAPH:-nb201:engine:64,nb201:bf16:64,darts:engine:64,darts:bf16:64}
compiled=${COMPILED:-nb201:bf16+c:64,darts:bf16+c:64}
epochs=${EPOCHS:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
stage() { echo "=== $1 ($(($(date +%s) - start)) s in, $(left) s left)"; }

stage env
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
    python3 -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda); print('bf16 native', torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))"
    nproc
} 2>&1 | tee "$out/env.txt"

stage smoke
timeout 120 python3 "$here/benchmarks/gpu_speed.py" --device "$device" \
    --rows nb201:engine:8,nb201:bf16:8 --layers 1 --steps 2 --stop-on-error ||
    { echo "smoke failed: stopping"; exit 1; }

stage eager
timeout $(($(left) - 420)) python3 "$here/benchmarks/gpu_speed.py" --device "$device" \
    --rows "$eager" --steps "$steps" $layers --profile 1 --out "$out/rows.jsonl" --table "$out/profile.txt"

stage graph
timeout $(($(left) - 300)) python3 "$here/benchmarks/gpu_graph_step.py" --rows "$graph" \
    --steps "$steps" --out "$out/graph.jsonl"

stage compiled
timeout $(($(left) - 200)) python3 "$here/benchmarks/gpu_speed.py" --device "$device" \
    --rows "$compiled" --steps "$steps" $layers --profile 1 --out "$out/rows.jsonl"

stage search
precision=$(python3 - "$out/rows.jsonl" <<'EOF'
import json, statistics, sys
best = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["space"] == "nb201" and r["batch"] == 64 and r["impl"] in ("engine", "bf16"):
        best[r["precision"]] = statistics.median(r["step_ms"])
print(min(best, key=best.get) if best else "fp32")
EOF
)
echo "search precision: $precision"
rm -rf /tmp/diffnas-gpu-run
timeout $(($(left) - 10)) python3 -m diffnas search --config darts_nb201 --dataset cifar10 \
    --data-root "$data" --device "$device" --epochs "$epochs" $layers ${EXTRA:-} \
    --set log.lookup=false --set "search.precision=$precision" \
    --set data.cache_dir=/tmp/diffnas-gpu-cache --no-progress --out /tmp/diffnas-gpu-run \
    2>&1 | tee "$out/search.log"
cp /tmp/diffnas-gpu-run/metrics.jsonl /tmp/diffnas-gpu-run/genotype.json "$out/" 2>/dev/null
stage done
