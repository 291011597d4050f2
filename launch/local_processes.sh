#!/usr/bin/env bash
# N JAX processes on one machine (CPU collectives over gloo): rehearses a multi-host run on a laptop.
#   launch/local_processes.sh 2 configs/fhgan.py:smoke /tmp/fhgan_2proc [--config.x=y ...]
# Each process sees the devices XLA gives it (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=4).
# The script exits with the first non-zero status of its processes; tests/test_multiprocess.py runs it.
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
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
