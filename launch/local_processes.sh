#!/usr/bin/env bash
# N JAX processes on one machine (CPU collectives over gloo): rehearses a multi-host run on a laptop.
#   launch/local_processes.sh 2 configs/fhgan.py:smoke /tmp/fhgan_2proc [--config.x=y ...]
set -euo pipefail
count=$1 config=$2 workdir=$3
shift 3
port=$((20000 + RANDOM % 20000))
pids=()
for ((i = 0; i < count; i++)); do
  python -m hallujax.train --distributed --coordinator_address="localhost:$port" --num_processes="$count" \
    --process_id="$i" --config="$config" --workdir="$workdir" "$@" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
