#!/usr/bin/env bash
# The five-minute GPU check: probe, cuda-python copies, the model in PyTorch on CUDA, vce-run's
# pipeline ceiling and end to end, and TensorRT / onnxruntime-gpu where installed. Writes
# OUT/gpu_check.json and OUT/gpu_check.md (rewritten after every step, so a failing or hanging step
# never loses what the others measured); see bench/gpu_check.py for the steps.
#
#   bash bench/gpu_check.sh                      # everything, full size, under 5 minutes
#   bash bench/gpu_check.sh --quick --out /tmp/g # tiny model, small inputs
#   bash bench/gpu_check.sh --steps 1,2,4
#
# Needs Python with numpy, opencv-python-headless, pillow, onnxruntime, typer, rich (+ av for H.264
# clips in steps 4 and 5, else MPEG-4 part 2; torch, timm, safetensors, onnx for steps 3, 5, 6;
# cuda-bindings for step 2). Step 4 is bench/bench_pipeline.py's pipeline_ceiling, the benchmark
# that bench/run --only pipeline runs, on one 336x336 clip. The project itself need not be
# installed: without an installed vce the checkout is mapped onto the vce namespace as setup.py
# does. VCE_WHEELS=DIR installs DIR/*.whl with --no-deps first (open_clip_torch,
# onnxconverter-common...). Python: $VCE_PYTHON, else the active venv, else the checkout's .venv,
# else python3.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${VCE_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    py="$VIRTUAL_ENV/bin/python"
  elif [[ -x "$repo/.venv/bin/python" ]]; then
    py="$repo/.venv/bin/python"
  else
    py="$(command -v python3 || command -v python)"
  fi
fi
if [[ -n "${VCE_WHEELS:-}" ]]; then
  "$py" -m pip install -q --no-deps "$VCE_WHEELS"/*.whl || echo "gpu_check: warning: installing $VCE_WHEELS/*.whl failed; going on" >&2
fi
if ! "$py" -c "import vce.runtime" >/dev/null 2>&1; then
  shim="$(mktemp -d)"
  trap 'rm -rf "$shim"' EXIT
  mkdir -p "$shim/vce"
  for layer in runtime calibration train export; do ln -s "$repo/$layer" "$shim/vce/$layer"; done
  export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: vce is not installed; using the checkout $repo"
fi
"$py" "$here/gpu_check.py" "$@"
