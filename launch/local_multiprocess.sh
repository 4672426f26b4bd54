#!/usr/bin/env bash
# Simulates N hosts on one machine: N processes on loopback, each with D fake CPU devices.
#
#   launch/local_multiprocess.sh N D --config configs/demo.py --workdir workdirs/demo_2x2 [--config.key=value ...]
#
# Process 0 logs to the terminal and to <workdir>/logs/process_0.log; the others
# only to <workdir>/logs/process_<i>.log. Ctrl-C (or SIGTERM) reaches every process:
# they agree on a step, save a checkpoint there and exit with status 143; the
# same command resumes. Exit status: the worst of the processes' statuses.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS --config <file> --workdir <dir> [flags...]" >&2
  exit 2
fi
num_processes=$1; devices=$2; shift 2
workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --workdir=*) workdir="${args[$i]#--workdir=}" ;;
    --workdir) workdir="${args[$((i + 1))]}" ;;
  esac
done
[[ -n "$workdir" ]] || { echo "$0: pass --workdir" >&2; exit 2; }
mkdir -p "$workdir/logs"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pids=()
for ((i = 0; i < num_processes; i++)); do
  log="$workdir/logs/process_$i.log"
  cmd=(env JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$devices"
       python3 -m simdis_jax.main "$@" --coordinator_address="127.0.0.1:$port"
       --num_processes="$num_processes" --process_id="$i")
  if [[ $i -eq 0 ]]; then
    "${cmd[@]}" > >(tee "$log") 2>&1 &  # $! is the process itself, so signals reach it
  else
    "${cmd[@]}" > "$log" 2>&1 &
  fi
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { rc=$?; (( rc > status )) && status=$rc; }
done
exit $status
