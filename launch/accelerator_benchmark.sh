#!/usr/bin/env bash
# The benchmark suite on an accelerator host in one go (Python and jax preinstalled, no package index).
#   launch/accelerator_benchmark.sh WHEELS_DIR [OUT_DIR] [extra python -m hallujax.benchmark flags ...]
# 1. installs hallujax's remaining dependencies from WHEELS_DIR (made by launch/prepare_wheels.sh) with
#    --no-index; jax is the host's own;
# 2. runs `python -m hallujax.benchmark --suite $SUITE` (default paper, --dtypes float32,bfloat16) within
#    BUDGET_SECONDS (default 2400), writing OUT_DIR/suite_<suite>.md and .json and a jax.profiler trace of
#    the slowest step in OUT_DIR/trace (open with TensorBoard's profile plugin or Perfetto);
# 3. with torch importable, the StyleGAN2 hallujax/PyTorch side by side (OUT_DIR/torch_side_by_side.json).
# Environment: SUITE, BUDGET_SECONDS, PYTHON, PIP_INSTALL_ARGS, TORCH_SIDE_BY_SIDE=0, TORCH_CONFIG.
# Run from the repository checkout (the configs live there). Compiled programs are cached in
# $JAX_COMPILATION_CACHE_DIR (default OUT_DIR/jax_cache), so a second run and the trace skip recompiling.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
wheels=${1:?usage: launch/accelerator_benchmark.sh WHEELS_DIR [OUT_DIR] [benchmark flags ...]}
out=${2:-$here/benchmark_results/$(date -u +%Y%m%dT%H%M%SZ)}
shift $(($# >= 2 ? 2 : 1))
python=${PYTHON:-python3}
suite=${SUITE:-paper}
budget=${BUDGET_SECONDS:-2400}
cd "$here"
mkdir -p "$out"
"$python" -c "import jax; print('jax', jax.__version__, '|', jax.device_count(), 'x', jax.devices()[0].device_kind)" \
  || { echo "error: this host's Python has no working jax; install jax for its accelerator first." >&2; exit 2; }
requirements=$wheels/requirements.txt
[[ -f "$requirements" ]] || { echo "error: $requirements missing: make $wheels with launch/prepare_wheels.sh." >&2; exit 2; }
# shellcheck disable=SC2086  # PIP_INSTALL_ARGS is a word list (e.g. "--user" or "--target DIR")
"$python" -m pip install --quiet --no-index --find-links "$wheels" ${PIP_INSTALL_ARGS:-} -r "$requirements"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$out/jax_cache}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
"$python" -m hallujax.benchmark --suite="$suite" --out="$out" --budget_seconds="$budget" --trace_slowest "$@" \
  2>&1 | tee "$out/suite.log"
if [[ "${TORCH_SIDE_BY_SIDE:-1}" == 1 ]] && "$python" -c "import torch" 2>/dev/null; then
  "$python" -m hallujax.benchmark --suite=torch --torch_config="${TORCH_CONFIG:-configs/stylegan2.py}" \
    --out="$out" 2>&1 | tee "$out/torch.log" || echo "the PyTorch side by side failed (see $out/torch.log)"
fi
echo "results in $out"
