#!/usr/bin/env bash
# traitmap's GPU check (bench/GPU.md): bench/gpu_check.py on one GPU under a hard time limit.
#
#   bench/gpu_check.sh [--quick] [more gpu_check.py options]
#
# Needs only torch, transformers, peft, accelerate and safetensors besides the repository's
# src/ (no pip install, no data dir, no model download). Writes gpu_check.json,
# gpu_check.md and gpu_check.log to $OUT (default ./gpu_check_out). Full: under 8 minutes
# on one H100; --quick: about 2.5. PYTHON picks the interpreter (default python3);
# GPU_CHECK_LIMIT overrides the hard limit in seconds (full 470, quick 180).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LIMIT=470
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then LIMIT=180; fi
done
LIMIT="${GPU_CHECK_LIMIT:-$LIMIT}"

echo "== nvidia-smi"
nvidia-smi || echo "(nvidia-smi not found)"
echo "== versions"
"$PY" - <<'EOF'
import platform
print("python", platform.python_version(), platform.machine())
for name in ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "huggingface_hub"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 -- report what is missing, the check says what it needs
        print(name, "MISSING:", e)
import torch
print("cuda available", torch.cuda.is_available(), "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== bench/gpu_check.py $* (hard limit ${LIMIT}s)"
set +e
timeout -k 10 "$LIMIT" "$PY" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "gpu_check.py ran past ${LIMIT}s and was stopped: the sections it finished are in $OUT/gpu_check.json"
  [ -f "$OUT/gpu_check.md" ] && cat "$OUT/gpu_check.md"
fi
exit "$rc"
