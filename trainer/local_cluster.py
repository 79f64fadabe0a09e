"""A multi-worker cluster on one machine: free localhost ports and one TF_CONFIG per task.

`python -m trainer.local_cluster N` prints N TF_CONFIG values, one per line,
for `scripts/run_multiworker_local.sh`; tests and the benchmark call
`tf_configs(N)`. Worker 0 is the chief (there is no separate "chief" task).
"""

import contextlib
import json
import socket
import sys


def free_ports(count: int) -> list[int]:
  """`count` distinct TCP ports that were free a moment ago on localhost.

  All sockets are held open together so the ports differ; another process can
  still take one before the worker binds it, so callers retry on a bind failure.
  """
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
    for sock in sockets:
      sock.bind(("localhost", 0))
    return [sock.getsockname()[1] for sock in sockets]


def tf_configs(num_workers: int) -> list[str]:
  """TF_CONFIG (JSON) of each of `num_workers` workers on localhost, worker 0 first."""
  if num_workers < 1:
    raise ValueError(f"num_workers={num_workers} must be >= 1.")
  cluster = {"worker": [f"localhost:{port}" for port in free_ports(num_workers)]}
  return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
          for index in range(num_workers)]


def main(argv: list[str]) -> None:
  if len(argv) != 2 or not argv[1].isdigit() or int(argv[1]) < 1:
    raise SystemExit(f"usage: python -m trainer.local_cluster NUM_WORKERS (got {argv[1:]})")
  print("\n".join(tf_configs(int(argv[1]))))


if __name__ == "__main__":
  main(sys.argv)
