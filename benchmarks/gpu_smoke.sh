#!/usr/bin/env bash
# GPU smoke test: the tiny pipeline in bf16 on a CUDA GPU, then an expert's training step and
# rollouts in bf16 beside fp32 on that GPU, with tokens/s and MFU against the GPU's bf16 matmul
# peak measured in the same run. On a machine without CUDA it says so and exits 0.
#
#   bash benchmarks/gpu_smoke.sh            # from the project root, with the project's venv active
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if ! "$PYTHON" -c 'import torch, bar' 2>/dev/null; then
  echo "gpu_smoke: $PYTHON cannot import torch and bar: activate the project's venv (or set PYTHON)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_smoke: needs a CUDA GPU (torch.cuda.is_available() is False here); nothing run"
  exit 0
fi
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
"$PYTHON" -c 'import torch; print("gpu_smoke:", torch.cuda.get_device_name(), "bf16:", torch.cuda.is_bf16_supported())'

# The tiny pipeline, bf16, in a throw-away copy of the project (git + DVC repository).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r bar specs data dvc.yaml params.yaml .dvcignore .gitignore pyproject.toml "$work"/
mkdir -p "$work/.dvc" "$work/baselines" && cp .dvc/config .dvc/.gitignore "$work/.dvc/" && cp baselines/dvc.yaml "$work/baselines/"
(
  cd "$work"
  sed -i 's/^preset: .*/preset: tiny/' params.yaml
  sed -i 's/^precision: .*/precision: bf16/' specs/model.yaml
  grep -q '^precision:' specs/model.yaml || echo 'precision: bf16' >> specs/model.yaml
  git init -q -b main && git add -A && git -c user.name=smoke -c user.email=smoke@bar.invalid commit -qm smoke
  start=$(date +%s)
  "$PYTHON" -m dvc repro
  echo "gpu_smoke: tiny pipeline in bf16 on the GPU: $(( $(date +%s) - start )) s"
  "$PYTHON" -m dvc metrics show metrics/evaluate.json
)
# Throughput and MFU of an expert's step at the default size and hidden 512, bf16 vs fp32.
"$PYTHON" benchmarks/train_throughput.py --precision-only --preset default
