"""A multi-worker cluster on one machine: free localhost ports and one TF_CONFIG per task.

`python -m trainer.cloud.local_cluster N` prints N TF_CONFIG values, one per line,
for `scripts/run_multiworker_local.sh`; tests and the benchmark call
`tf_configs(N)`. Worker 0 is the chief (there is no separate "chief" task),
unless a Vertex AI-style cluster with a "chief" task is asked for.

"localhost" in TF_CONFIG does not keep the workers' gRPC servers on loopback:
TensorFlow listens on every interface, whatever host the cluster names
(`GrpcServer::Init` in tensorflow/core/distributed_runtime/rpc/grpc_server_lib.cc
binds "0.0.0.0:" + the port; no ServerDef field or environment variable
changes that), and its distributed runtime has no authentication. So the
launcher runs its workers in a network namespace of their own, whose only
interface is loopback; `python -m trainer.cloud.local_cluster --loopback_up`
brings that interface up (a new namespace's is down) where `ip` may be missing.
"""

import contextlib
import fcntl
import json
import socket
import struct
import sys

# <linux/sockios.h> and <net/if.h>: get and set an interface's flags; "up".
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
# struct ifreq's head: the interface name (16 bytes), then the short flags.
_IFREQ_FLAGS = "16sh"


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


def tf_configs(num_workers: int, chief_task: bool = False) -> list[str]:
  """TF_CONFIG (JSON) of each of `num_workers` tasks on localhost, the chief first.

  Args:
    num_workers: tasks in the cluster.
    chief_task: make the first task of type "chief" and the others "worker" 0..n-2,
      as Vertex AI does (worker pool 0 is the chief); else all are "worker"s and
      worker 0 is the chief.
  """
  if num_workers < 1:
    raise ValueError(f"num_workers={num_workers} must be >= 1.")
  addresses = [f"localhost:{port}" for port in free_ports(num_workers)]
  if chief_task:
    cluster = {"chief": addresses[:1], "worker": addresses[1:]}
    tasks = [("chief", 0)] + [("worker", index) for index in range(num_workers - 1)]
  else:
    cluster = {"worker": addresses}
    tasks = [("worker", index) for index in range(num_workers)]
  return [json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index},
                      "environment": "cloud"})
          for task_type, index in tasks]


def bring_loopback_up() -> None:
  """Sets the loopback interface `lo` up, as `ip link set lo up` does (needs CAP_NET_ADMIN,
  which the creator of a network namespace has in it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    request = struct.pack(_IFREQ_FLAGS, b"lo", 0)
    flags = struct.unpack(_IFREQ_FLAGS, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ_FLAGS, b"lo", flags | _IFF_UP))


def main(argv: list[str]) -> None:
  if argv[1:] == ["--loopback_up"]:
    try:
      bring_loopback_up()
    except OSError as error:
      raise SystemExit(f"cannot set the loopback interface up ({error})") from error
    return
  if len(argv) != 2 or not argv[1].isdigit() or int(argv[1]) < 1:
    raise SystemExit("usage: python -m trainer.cloud.local_cluster NUM_WORKERS | --loopback_up "
                     f"(got {argv[1:]})")
  print("\n".join(tf_configs(int(argv[1]))))


if __name__ == "__main__":
  main(sys.argv)
