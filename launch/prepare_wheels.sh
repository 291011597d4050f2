#!/usr/bin/env bash
# Wheels of hallujax's dependencies for an accelerator host that has Python and jax but no package index.
#   launch/prepare_wheels.sh WHEELS_DIR [PYTHON_VERSION=3.12] [ARCH=x86_64]
# Run it where pip can reach an index; copy WHEELS_DIR to the host; there launch/accelerator_benchmark.sh
# installs from it with --no-index. Downloads binary wheels only (manylinux for ARCH, or pure Python) for
# the target CPython, the closure of pyproject.toml's [project] dependencies, then drops jax, jaxlib and
# their CUDA/TPU plugins: the host brings its own, matched to its drivers.
# Environment: PIP_SOURCE (extra pip download arguments, e.g. "--no-index --find-links DIR" to copy from a
# local mirror), REQUIREMENTS (a space-separated requirement list instead of pyproject's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: launch/prepare_wheels.sh WHEELS_DIR [PYTHON_VERSION] [ARCH]}
python_version=${2:-3.12}
arch=${3:-x86_64}
abi="cp${python_version/./}"
python=${PYTHON:-python3}
if [[ -z "${REQUIREMENTS:-}" ]]; then
  REQUIREMENTS=$("$python" - "$here/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
  dependencies = tomllib.load(f)["project"]["dependencies"]
print(" ".join(d.replace(" ", "") for d in dependencies if not d.replace(" ", "").lower().startswith(("jax>", "jax=", "jax<", "jax;"))))
PY
)
fi
mkdir -p "$out"
echo "wheels for CPython $python_version ($abi, manylinux $arch) into $out: $REQUIREMENTS"
# shellcheck disable=SC2086  # PIP_SOURCE and REQUIREMENTS are word lists
"$python" -m pip download --dest "$out" --only-binary=:all: --python-version "$python_version" \
  --implementation cp --abi "$abi" --abi abi3 --abi none \
  --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
  --platform any ${PIP_SOURCE:-} $REQUIREMENTS
# The host's jax stays: a jaxlib from here could mismatch its CUDA plugin or libtpu.
find "$out" -maxdepth 1 \( -name 'jax-*' -o -name 'jaxlib-*' -o -name 'jax_cuda*' -o -name 'jax_plugins*' \
  -o -name 'libtpu*' -o -name 'nvidia_*' \) -print -delete | sed 's/^/dropped (the host brings it): /'
printf '%s\n' $REQUIREMENTS > "$out/requirements.txt"
echo "$(ls "$out"/*.whl 2>/dev/null | wc -l) wheels and requirements.txt in $out"
