#!/usr/bin/env bash
# GPU benchmarks on one lent GPU, under 8 minutes: AdamW vs SAM step time at the paper's scale
# (unet-adm-cifar10, bf16 and fp32), the HVP time, top-5 eigenvalues against PyHessian, the
# sampler against diffusers, and the batched vs point-by-point landscape.
#
#   bash benchmarks/gpu.sh             # on the GPU machine (Python 3.12, torch 2.11, no network)
#   bash benchmarks/gpu.sh --dry-run   # anywhere: print the commands, check every script parses
#
# Missing packages travel as wheels in .whl/ (see the device notes): they are installed into
# /tmp/site with --no-index first. flatgen itself runs from src/ (PYTHONPATH), so the machine's
# own torch is kept. Output: one log per benchmark in ${OUT:-bench-out}/, echoed as it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
RESULTS=${OUT:-bench-out}
[[ $DRY == 0 ]] && mkdir -p "$RESULTS"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if [[ $DRY == 0 && -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

DEVICE=cuda
[[ $DRY == 1 ]] && DEVICE=cpu
# name | timeout (s) | command
BENCHES=(
  "adamw-fp32|60|benchmarks/paper_scale.py --device $DEVICE --optimizer adamw --batch 128 --lanczos 0"
  "sam-fp32|60|benchmarks/paper_scale.py --device $DEVICE --optimizer sam --batch 128 --lanczos 0"
  "adamw-bf16|60|benchmarks/paper_scale.py --device $DEVICE --optimizer adamw --batch 128 --dtype bfloat16 --lanczos 0"
  "sam-bf16|60|benchmarks/paper_scale.py --device $DEVICE --optimizer sam --batch 128 --dtype bfloat16 --lanczos 0"
  "hvp|60|benchmarks/paper_scale.py --device $DEVICE --optimizer sam --batch 128 --lanczos 5"
  "pyhessian-top5|120|benchmarks/hessian_speed.py --quick --k 5"
  "sampler-vs-diffusers|60|benchmarks/sampler_speed.py --steps 20 --batch 256 --repeats 3"
  "landscape-batched|60|benchmarks/landscape_speed.py --quick"
)

for entry in "${BENCHES[@]}"; do
  IFS='|' read -r name limit cmd <<<"$entry"
  script=${cmd%% *}
  if [[ $DRY == 1 ]]; then
    echo "[dry-run] $name (limit ${limit}s): $PY $cmd"
    $PY -m py_compile "$script"
    continue
  fi
  echo "== $name"
  # shellcheck disable=SC2086  # the command's words are meant to split
  timeout "$limit" $PY $cmd 2>&1 | tee "$RESULTS/$name.log" || echo "$name: failed or timed out"
done
[[ $DRY == 1 ]] && echo "[dry-run] all ${#BENCHES[@]} benchmark scripts parse"
exit 0
