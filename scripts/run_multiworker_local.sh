#!/usr/bin/env bash
# Runs a multi-worker training job on this machine: N worker processes of
# `python -m trainer.main`, each with its own TF_CONFIG on free localhost ports.
#
#   scripts/run_multiworker_local.sh N [trainer flags...]
#   scripts/run_multiworker_local.sh 2 --config=configs/test.py --workdir=/tmp/dae-2w
#
# runtime.strategy=multi_worker_mirrored is added unless the flags set a
# strategy. Each output line is prefixed with its task ("[worker 1] ...").
# Waits for all workers; if one fails, stops the others and exits with the
# failed worker's status. Python: $PYTHON, else the repository's .venv, else python3.
#
# The workers run in a network namespace of their own, whose only interface is
# loopback: TensorFlow's gRPC servers listen on every interface whatever host
# TF_CONFIG names, and have no authentication. That namespace has no other
# network (no gs:// paths, no dataset downloads). LOCAL_CLUSTER_NETWORK=host
# runs them on this machine's network instead, listening on every interface.
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

if [[ $# -lt 1 ]]; then
  echo "run_multiworker_local.sh: missing N, the number of workers; e.g. $0 2 --config=configs/test.py --workdir=/tmp/dae" >&2
  exit 2
fi
case "$1" in
  -h|--help) usage; exit 0 ;;
esac
launcher_arguments=("$@")
num_workers=$1
shift
if ! [[ $num_workers =~ ^[1-9][0-9]*$ ]]; then
  echo "run_multiworker_local.sh: N='$num_workers' is not a positive number of workers; pass e.g. 2 first" >&2
  exit 2
fi
# Compared as text first: a huge N would overflow bash's arithmetic.
if [[ ${#num_workers} -gt 2 || $num_workers -gt 64 ]]; then
  echo "run_multiworker_local.sh: N=$num_workers workers is more than this launcher runs on one machine (1..64); pass a smaller N" >&2
  exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
trainer_flags=("$@")
if ! printf '%s\n' "${trainer_flags[@]}" | grep -q -- '^--config.runtime.strategy='; then
  # After --config: absl reads overrides of a config file only once it is given.
  trainer_flags+=(--config.runtime.strategy=multi_worker_mirrored)
fi

# See trainer/cloud/local_cluster.py for why TF_CONFIG's "localhost" is not enough.
network=${LOCAL_CLUSTER_NETWORK:-private}
case $network in
  private|host) ;;
  *)
    echo "run_multiworker_local.sh: LOCAL_CLUSTER_NETWORK='$network' is neither private (the default: the workers reachable over loopback only) nor host (this machine's network, every interface)" >&2
    exit 2 ;;
esac
if [[ $network == private && -z ${_LOCAL_CLUSTER_IN_NAMESPACE:-} ]]; then
  if printf '%s\n' "${trainer_flags[@]}" | grep -q 'gs://'; then
    echo "run_multiworker_local.sh: gs:// paths need a network, which the workers' private network namespace does not have; use local paths, or set LOCAL_CLUSTER_NETWORK=host (the workers then listen on every interface, without authentication)" >&2
    exit 2
  fi
  namespace=(unshare --net)
  # Without root, a user namespace of its own gives the right to create one.
  if [[ $(id -u) != 0 ]]; then namespace+=(--map-root-user); fi
  if ! unshare_error=$("${namespace[@]}" true 2>&1); then
    echo "run_multiworker_local.sh: cannot give the workers a private network namespace (${namespace[*]}: ${unshare_error:-not available}); without one TensorFlow's workers listen on every interface, without authentication, whatever TF_CONFIG says. To run them so (on a machine no one else can reach), set LOCAL_CLUSTER_NETWORK=host" >&2
    exit 2
  fi
  # The same launcher, in the new namespace (one process: signals reach it as before).
  _LOCAL_CLUSTER_IN_NAMESPACE=1 exec "${namespace[@]}" "$0" "${launcher_arguments[@]}"
fi
if [[ $network == private ]]; then
  # A new namespace's loopback interface is down.
  if ! loopback_error=$(cd "$repo" && "$python" -m trainer.cloud.local_cluster --loopback_up 2>&1); then
    echo "run_multiworker_local.sh: $python -m trainer.cloud.local_cluster --loopback_up failed ($(tail -n 1 <<<"$loopback_error")); set PYTHON to a Python with the trainer installed" >&2
    exit 2
  fi
  network_note="in a private network namespace, reachable over loopback only"
else
  network_note="on this machine's network: their gRPC servers listen on every interface, without authentication"
fi

scratch=$(mktemp -d)
worker_pids=()
reader_pids=()

stop_workers() {
  local pid
  for pid in "${worker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${worker_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return 0
    sleep 0.2
  done
  for pid in "${worker_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'stop_workers; rm -rf "$scratch"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs the job once; returns the first failing worker's status (0 if all succeed).
run_once() {
  local attempt=$1 index task pid status=0 finished rc
  local -a tf_configs
  local picked
  # Not `mapfile < <(...)`: a process substitution's exit status is lost, and
  # a missing Python would leave no TF_CONFIGs ("unbound variable", then a hang).
  if ! picked=$(cd "$repo" && "$python" -m trainer.cloud.local_cluster "$num_workers" 2>"$scratch/ports.err"); then
    echo "run_multiworker_local.sh: picking free ports with $python -m trainer.cloud.local_cluster failed ($(tail -n 1 "$scratch/ports.err")); set PYTHON to a Python with the trainer installed" >&2
    exit 2
  fi
  mapfile -t tf_configs <<<"$picked"
  if [[ ${#tf_configs[@]} != "$num_workers" ]]; then
    echo "run_multiworker_local.sh: $python -m trainer.cloud.local_cluster printed ${#tf_configs[@]} TF_CONFIGs for $num_workers workers; check that PYTHON runs this repository's trainer" >&2
    exit 2
  fi
  worker_pids=()
  reader_pids=()
  for ((index = 0; index < num_workers; index++)); do
    local fifo=$scratch/worker$index.$attempt
    mkfifo "$fifo"
    # The reader prefixes each line with its task and keeps a copy for the bind check.
    (sed -u "s/^/[worker $index] /" <"$fifo" | tee "$scratch/worker$index.log") &
    reader_pids+=($!)
    TF_CONFIG=${tf_configs[$index]} "$python" -m trainer.main "${trainer_flags[@]}" >"$fifo" 2>&1 &
    worker_pids+=($!)
  done
  echo "[launcher] started $num_workers workers (pids ${worker_pids[*]}) $network_note, with: ${trainer_flags[*]}" >&2
  local -a running=("${worker_pids[@]}")
  while [[ ${#running[@]} -gt 0 ]]; do
    rc=0
    wait -n -p finished "${running[@]}" || rc=$?
    local -a still_running=()
    for pid in "${running[@]}"; do
      if [[ $pid != "$finished" ]]; then still_running+=("$pid"); fi
    done
    running=("${still_running[@]}")
    if [[ $rc != 0 ]]; then
      status=$rc
      for ((task = 0; task < num_workers; task++)); do
        if [[ ${worker_pids[$task]} == "$finished" ]]; then
          echo "[launcher] worker $task exited with status $rc; stopping the other workers" >&2
        fi
      done
      stop_workers
      break
    fi
  done
  wait "${worker_pids[@]}" "${reader_pids[@]}" 2>/dev/null || true
  return "$status"
}

for attempt in 1 2 3; do
  status=0
  run_once "$attempt" || status=$?
  # Free ports are picked a moment before the workers bind them; another
  # process can take one in between. Only then is a new attempt worth it.
  if [[ $status != 0 ]] && grep -qiE 'address already in use|failed to bind' "$scratch"/worker*.log; then
    echo "[launcher] a port was taken before a worker could bind it; retrying with new ports ($attempt/3)" >&2
    continue
  fi
  exit "$status"
done
exit "$status"
