#!/usr/bin/env bash
# Cloud TPU VM pod: create, install on all workers, run the same command on every worker, tail logs, delete.
#
#   launch/tpu_pod.sh create                 # the TPU VM pod ($TPU_NAME, $ZONE, $ACCELERATOR, $RUNTIME)
#   launch/tpu_pod.sh install                # copies this checkout to every worker and pip-installs it
#   launch/tpu_pod.sh run --config configs/imagenet/simdis_on_7v.py --workdir gs://my-bucket/simdis_on_7v
#   launch/tpu_pod.sh logs                   # follows process 0's log
#   launch/tpu_pod.sh delete
#
# Every worker runs `python -m simdis_jax.main --distributed=yes ...`: jax.distributed
# finds the pod's workers itself. The workdir must be gs:// (all workers write
# their checkpoint shards there; process 0 writes config, metrics and
# TensorBoard events). Logs stay on each worker in ~/simdis_logs/<run>.log.
#
# Maintenance events and preemptions reach the run as SIGTERM / jax's preemption
# notice: the workers agree on a step, save a checkpoint and exit with status 143.
# Run the same `run` command again (on a recreated pod if it was preempted) to resume.
set -euo pipefail
TPU_NAME=${TPU_NAME:-simdis-pod}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
RUN_NAME=${RUN_NAME:-simdis}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
on_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"; }

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCELERATOR" \
      --version "$RUNTIME" ${PREEMPTIBLE:+--preemptible}
    ;;
  install)
    tar -C "$REPO_DIR" --exclude=.git --exclude=workdirs -czf /tmp/simdis_jax.tgz .
    gcloud compute tpus tpu-vm scp /tmp/simdis_jax.tgz "$TPU_NAME":~/ --zone "$ZONE" --worker=all
    on_all 'mkdir -p ~/simdis_jax && tar -xzf ~/simdis_jax.tgz -C ~/simdis_jax &&
            pip install -q "jax[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html &&
            pip install -q -e ~/simdis_jax "tensorflow-cpu" "gcsfs"'
    ;;
  run)
    shift
    args=$(printf '%q ' "$@")
    # nohup: the run outlives the ssh session; every worker starts the same command.
    on_all "mkdir -p ~/simdis_logs && cd ~/simdis_jax && nohup python3 -m simdis_jax.main --distributed=yes $args \
            > ~/simdis_logs/$RUN_NAME.log 2>&1 &"
    echo "Started on every worker of $TPU_NAME; follow it with: $0 logs"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=0 --command "tail -F ~/simdis_logs/$RUN_NAME.log"
    ;;
  stop)  # SIGTERM: the workers save a checkpoint at an agreed step and exit (status 143)
    on_all "pkill -TERM -f 'simdis_jax.main' || true"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet
    ;;
  *)
    echo "usage: $0 {create|install|run <flags>|logs|stop|delete}" >&2
    exit 2
    ;;
esac
