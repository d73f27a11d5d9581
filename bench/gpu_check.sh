#!/usr/bin/env bash
# Issue 17's GPU measurements in one run (about 7 minutes on one H100/H200; more with more GPUs).
#
#   bench/gpu_check.sh             # on the GPU machine, from the repository root
#   DRY=1 bench/gpu_check.sh       # the same commands, tiny and uncompiled, on any machine (the CPU too)
#
# 1. MFU of bench/train_gpu.py (~125M Llama, sequence 2,048, batch 16, compiled, head size 128):
#    baseline (transformers' layers), Liger's fused linear + cross-entropy and friends
#    (train.kernels liger), and liger + CUDA graphs (train.compile_mode reduce-overhead).
# 2. Scaling: DDP and FSDP under torchrun from 1 to every GPU (batch 16 per GPU); on one GPU
#    that is torchrun's and FSDP's overhead against the plain run.
# 3. Evaluation: eval.dtype bfloat16 against float32 (scores and seconds), bench/eval_dtype.py.
#
# liger-kernel is not in the GPU image and cannot be fetched there: carry its wheel in .whl
# (bench/README.md says how); without it the liger runs are recorded as skipped.
# Results: JSON lines in $OUT/gpu_check.jsonl (the device tool's folder) or bench/results/.
set -u
PY=${PYTHON:-python3}
DEST=${OUT:-bench/results}
mkdir -p "$DEST"
J="$DEST/gpu_check${DRY:+_dry}.jsonl"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  SITE=$(mktemp -d)  # a fresh folder in this machine's temp space: the wheels install nowhere else
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
HAS_LIGER=$($PY -c "import importlib.util, torch; print(int(torch.cuda.is_available() and importlib.util.find_spec('liger_kernel') is not None))")
echo "gpus: $NGPU, liger: $HAS_LIGER, results: $J"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

# One measurement; a failure or a timeout is recorded, and the next one runs.
train() {
  local name=$1; shift
  echo "== $name: $*"
  if ! timeout "${STEP_TIMEOUT:-200}" $PY bench/train_gpu.py "$@" ${DRY:+--dry-run} --json "$J"; then
    echo "{\"run\": \"$name\", \"failed\": \"bench/train_gpu.py $*\"}" >>"$J"
  fi
}

BASE=(--batch 16 --seq 2048 --heads 6 --compile)
# Dry: batch 2 and no cold CPU compile (minutes on 2 busy cores); train.compile's wiring is unit-tested.
[ -n "${DRY:-}" ] && BASE=(--batch 2)
train baseline "${BASE[@]}" --steps 60 --kernels torch
if [ "$HAS_LIGER" = 1 ]; then
  train liger "${BASE[@]}" --steps 60 --kernels liger
  train liger-cudagraphs "${BASE[@]}" --steps 60 --kernels liger --compile-mode reduce-overhead
else
  echo '{"run": "liger", "skipped": "liger-kernel not importable or no GPU"}' >>"$J"
fi
KERNELS=torch
[ "$HAS_LIGER" = 1 ] && KERNELS=liger
for n in $(seq 1 "$((NGPU > 0 ? NGPU : 1))"); do
  for p in ddp fsdp; do
    train "$p-$n" "${BASE[@]}" --steps 40 --kernels "$KERNELS" --torchrun --nproc "$n" --parallel "$p"
  done
done
if [ -n "${DRY:-}" ]; then
  timeout 300 $PY bench/eval_dtype.py --hidden 32 --layers 2 --heads 2 --items 20 --json "$J" || echo '{"run": "eval_dtype", "failed": true}' >>"$J"
else
  timeout 300 $PY bench/eval_dtype.py --hidden 768 --layers 12 --heads 6 --json "$J" || echo '{"run": "eval_dtype", "failed": true}' >>"$J"
fi
echo "done: $(wc -l <"$J") lines in $J"
