#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice. The same command runs on each host; jax finds the pod.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/ipfh.py gs://BUCKET/runs/ipfh [--config.train.batch_size=1024 ...]
set -euo pipefail
tpu_name=$1 zone=$2 config=$3 workdir=$4
shift 4
gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" --worker=all --command "
  cd ~/hallujax && pip install -q -e . -c constraints.txt 'jax[tpu]' &&
  python -m hallujax.train --distributed --config=$config --workdir=$workdir $*"
