#!/usr/bin/env bash
# Every benchmark at full size on one GPU (H100/H200: about 8 minutes), plus a smoke run of the user path:
# a 50-step `train-vision` of unet-sd14-random in bf16 on 256-px phantoms, 16 generated images, their `evaluate`.
# Writes <out>/suite.json: GPU name, torch/CUDA versions, each benchmark's last JSON line (ratio, MFU, peak memory)
# and the smoke run's metrics; each step's log is <out>/<step>.log.
#
#   benchmarks/gpu_suite.sh [--dry-run] [OUT_DIR]     (default OUT_DIR: outputs/gpu_suite/<UTC time>)
#
# --dry-run runs the same steps with tiny models on the CPU, the smoke run alongside the benchmarks; tests/test_gpu_suite.py runs it.
# Run from the repository root with the project's Python first on PATH (or PYTHON=/path/to/python).
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT=${1:-outputs/gpu_suite/$(date -u +%Y-%m-%dT%H-%M-%S)}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"

step() {  # step NAME TIMEOUT_S COMMAND... : run, keep the log and the exit status, stop the step at its time limit
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%T)): $*"
  local start=$SECONDS rc=0
  timeout --kill-after=20 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$OUT/$name.rc"
  if [[ $rc != 0 ]]; then
    echo "   $name FAILED after $((SECONDS - start)) s; last lines of $OUT/$name.log:"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   /'
  else
    echo "   $name done in $((SECONDS - start)) s"
  fi
}

if [[ $DRY == 1 ]]; then
  # Time limits here only stop a hung step; a shared CPU can be ten times slower than a free one (load 23 on 2 cores).
  benchmarks() {  # two chains side by side (the dry run checks that every step works; its timings mean nothing)
    { step vision_train 1800 "$PY" benchmarks/vision_train.py --device cpu --model unet-tiny --image-size 32 --batch 4 --steps 2 --warmup 1 --images 8 --levers none
      step vision_sample 900 "$PY" benchmarks/vision_sample.py --device cpu --model unet-tiny --batch 2 --steps 2 --repeats 1; } &
    step eval 900 "$PY" benchmarks/eval.py --device cpu --n 8 --size 64 --batch 4 --probe 4 --labeler-reports 200
    step language 900 "$PY" benchmarks/language.py --device cpu --steps 2 --reports 4 --batch-size 4 --max-length 16
    step data_index 900 "$PY" benchmarks/data_index.py --scale 0.002
    step phantoms 900 "$PY" benchmarks/phantoms.py --n 16 --size 64
    wait
  }
  PHANTOM_SIZE=64; SMOKE_LIMIT=900
  SMOKE_TRAIN=(vision/model=unet-tiny trainer=cpu-tiny trainer.max_steps=50 trainer.batch_size=4)
  SMOKE_GEN=(vision.steps=5 device=cpu)
else
  PHANTOM_SIZE=256; SMOKE_LIMIT=150
  "$PY" - <<'EOF' || { echo "no CUDA device: use --dry-run on a CPU machine"; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
  benchmarks() {
    step vision_train 240 "$PY" benchmarks/vision_train.py --device cuda --model unet-sd14-random --batch 32 --precision bf16 --steps 10 --warmup 3 --images 128 --levers channels_last,fused_adamw
    step vision_sample 90 "$PY" benchmarks/vision_sample.py --device cuda --model unet-sd14-random --batch 16 --steps 25 --repeats 1 --dtype fp16
    step eval 60 "$PY" benchmarks/eval.py --device cuda --n 1000 --size 256 --batch 64
    step language 30 "$PY" benchmarks/language.py --device cuda --steps 20 --batch-size 64
    step data_index 60 "$PY" benchmarks/data_index.py
    step phantoms 30 "$PY" benchmarks/phantoms.py
  }
  SMOKE_TRAIN=(vision/model=unet-sd14-random trainer.max_steps=50 trainer.batch_size=8 trainer.mixed_precision=bf16 trainer.checkpoint_every=50 sample_every=0)
  SMOKE_GEN=(vision.steps=25 device=cuda)
fi

# The user path: phantoms -> train-vision -> generate 16 images -> evaluate (random-init XRV features: a smoke run, so
# eval.allow_random_weights=true, which marks every such number in the tables and metrics.json).
SMOKE=$OUT/smoke
smoke() {
  step smoke_phantoms "$SMOKE_LIMIT" "$PY" -m cxr_irgen.cli make-phantoms out="$SMOKE/phantoms" n=64 size=$PHANTOM_SIZE hydra.run.dir="$SMOKE/make-phantoms"
  step smoke_train "$SMOKE_LIMIT" "$PY" -m cxr_irgen.cli train-vision data.root="$SMOKE/phantoms" "${SMOKE_TRAIN[@]}" hydra.run.dir="$SMOKE/train-vision"
  step smoke_generate "$SMOKE_LIMIT" "$PY" -m cxr_irgen.cli generate mode=images --labels "Cardiomegaly=1" --n 16 vision.checkpoint="$SMOKE/train-vision" \
    data.root="$SMOKE/phantoms" "${SMOKE_GEN[@]}" hydra.run.dir="$SMOKE/generate"
  step smoke_evaluate "$SMOKE_LIMIT" "$PY" -m cxr_irgen.cli evaluate generated="$SMOKE/generate" data.root="$SMOKE/phantoms" "eval.metrics=[fid,psnr_ssim,diversity]" \
    eval.real.n=16 eval.real.split=train eval.allow_random_weights=true hydra.run.dir="$SMOKE/evaluate"
}
if [[ $DRY == 1 ]]; then
  # On CPU the smoke run goes alongside the benchmarks (the dry run checks that every step works; its timings mean
  # nothing; tests/test_gpu_suite.py gives each process one thread); on the GPU every step runs in turn.
  benchmarks & smoke & wait
else
  benchmarks; smoke
fi
FAILED=()
for rc in "$OUT"/*.rc; do [[ $(cat "$rc") == 0 ]] || FAILED+=("$(basename "$rc" .rc)"); done

SUITE_FAILED="${FAILED[*]:-}" "$PY" - "$OUT" "$DRY" <<'EOF'
import json, os, sys
from pathlib import Path
import torch
out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
def last_json(name):
    log = out / f"{name}.log"
    lines = log.read_text().strip().splitlines() if log.exists() else []
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return None
steps = ["vision_train", "vision_sample", "eval", "language", "data_index", "phantoms"]
metrics = out / "smoke" / "evaluate" / "metrics.json"
suite = {
    "suite": "gpu_suite" + (" --dry-run (tiny models, CPU)" if dry else ""),
    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "failed": os.environ["SUITE_FAILED"].split(),
    "benchmarks": {name: last_json(name) for name in steps},
    "smoke": {"metrics": json.loads(metrics.read_text()) if metrics.exists() else None,
              "images": len(list((out / "smoke" / "generate").rglob("*.png")))},
}
(out / "suite.json").write_text(json.dumps(suite, indent=1))
print(json.dumps({"suite_json": str(out / "suite.json"), "failed": suite["failed"]}))
EOF
[[ ${#FAILED[@]} -eq 0 ]]
