#!/usr/bin/env bash
# The TensorRT check, on a GPU machine with TensorRT (pip install 'vce[all,trt]' or JetPack):
# export the full-size model (random weights), build fp16 and fp32 engines, run parity against
# PyTorch fp32 on every available backend, time the engines; then (diff variant) compare the
# attention formulations on TensorRT. Prints every figure; JSON reports land in $OUT_DIR.
#
#   bash bench/trt_gpu_check.sh                      # paper + diff, all formulations
#   VARIANTS=paper FORMULATIONS=matmul bash bench/trt_gpu_check.sh
set -euo pipefail

OUT_DIR=${OUT_DIR:-trt_check}
MODEL=${MODEL:-biomedclip}
VARIANTS=${VARIANTS:-"paper diff"}
FORMULATIONS=${FORMULATIONS:-"matmul equal-heads equal-heads-split"}
FRAMES=${FRAMES:-64}
MAX_BATCH=${MAX_BATCH:-32}
mkdir -p "$OUT_DIR"

python - <<'EOF'
import importlib.util, sys
missing = [m for m in ("tensorrt", "torch") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"trt_gpu_check: {', '.join(missing)} not installed; pip install 'vce[all,trt]'")
import tensorrt, torch
print(f"TensorRT {tensorrt.__version__}; torch {torch.__version__}; CUDA GPU: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (torch CPU build)'}")
EOF

time_engine() {  # $1 engine file: images/s at batch 8 and $MAX_BATCH through vce-run's TensorRT runner
  python - "$1" "$MAX_BATCH" <<'EOF'
import sys, time
import numpy as np
from vce.runtime.backends import create_runner
engine, max_batch = sys.argv[1], int(sys.argv[2])
with create_runner("trt", engine) as r:
    for b in sorted({8, max_batch}):
        x = np.random.default_rng(0).standard_normal((b, 3, 224, 224), dtype=np.float32)
        for _ in range(5):
            r.infer(x)
        n, t = 30, time.perf_counter()
        for _ in range(n):
            r.infer(x)
        dt = time.perf_counter() - t
        print(f"  {engine}: batch {b}: {n * b / dt:8.1f} images/s ({1000 * dt / n:.2f} ms/batch, host<->device copies included)")
EOF
}

for variant in $VARIANTS; do
  for form in $FORMULATIONS; do
    if [ "$variant" = paper ] && [ "$form" != matmul ]; then continue; fi  # paper heads are already equal
    b="$OUT_DIR/${MODEL}_${variant}_${form}"
    echo "=== $MODEL / $variant / $form"
    TIMEFORMAT="  onnx export (incl. ORT check): %R s"
    time vce-export onnx "$MODEL" --variant "$variant" --formulation "$form" -o "$b"
    TIMEFORMAT="  fp16 graph: %R s"
    time vce-export fp16 "$b"
    vce-export trt "$b" --precision fp16 --max-batch "$MAX_BATCH" --timing-cache "$OUT_DIR/timing.cache"
    if [ "$form" = matmul ]; then
      vce-export trt "$b" --precision fp32 --max-batch "$MAX_BATCH" --timing-cache "$OUT_DIR/timing.cache"
    fi
    vce-export parity "$b" --checkpoint "$MODEL" --variant "$variant" --limit "$FRAMES" \
      --json "$OUT_DIR/parity_${variant}_${form}.json" || echo "  PARITY FAILED (exit $?)"
    for e in "$b"/model.engine "$b"/model_fp32.engine; do
      [ -f "$e" ] && time_engine "$e"
      [ -f "$e.json" ] && python -c "import json,sys; d=json.load(open(sys.argv[1])); print('  sidecar:', {k: d[k] for k in ('gpu_name','compute_capability','tensorrt_version','precision','layer_precisions','build_seconds')})" "$e.json"
    done
  done
done
echo "reports: $OUT_DIR/parity_*.json"
