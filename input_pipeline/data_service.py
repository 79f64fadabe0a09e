"""tf.data service: a dispatcher or worker to run beside training, and the trainer's client side.

With `config.input.data_service_address` set, the training dataset is built as
usual and then handed to a tf.data service (`distribute`): its workers run the
pipeline (reading, shuffling, noise) and stream batches to the trainer, whose
own cores are left to training. Evaluation stays local.

Start the servers (each blocks until killed):

    python -m input_pipeline.data_service --dispatcher --port=5050 --all_interfaces
    python -m input_pipeline.data_service --worker --dispatcher_address=localhost:5050 \
        --port=5051 --all_interfaces

TensorFlow's dispatcher and worker listen on every network interface (their
configs have no bind address) and take no credentials: whoever reaches the
port can have the workers run tf.data pipelines. So they start only when
`--all_interfaces` says that is meant (on a trusted network, or behind a
firewall).

then train with --config.input.data_service_address=grpc://localhost:5050.
See docs/cloud.md for what the service changes about the data a run sees.
"""

import socket
import threading
import time
import urllib.parse

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from trainer import errors
from trainer import preemption

# Every epoch of the training dataset goes to one worker, whole: the dataset's
# source is the range of epochs (see pipeline._create_train_dataset), which the
# dispatcher splits between workers, so every image is seen once per epoch.
PROCESSING_MODE = "distributed_epoch"
# Seconds to wait for the dispatcher to accept a connection before giving up.
CONNECT_TIMEOUT_SECONDS = 5.0


def _host_port(address: str) -> tuple[str, int]:
  parsed = urllib.parse.urlsplit(address if "://" in address else f"grpc://{address}")
  if not parsed.hostname or not parsed.port:
    raise errors.ConfigError(
        f"input.data_service_address={address!r} is not host:port; use e.g. "
        "--config.input.data_service_address=grpc://localhost:5050.")
  return parsed.hostname, parsed.port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
  """Raises errors.ConfigError, in one line, unless something accepts connections at `address`.

  The tf.data service client retries an unreachable dispatcher forever; this
  turns a dead address into an error before training starts.
  """
  host, port = _host_port(address)
  try:
    with socket.create_connection((host, port), timeout=timeout):
      pass
  except OSError as error:
    raise errors.ConfigError(
        f"input.data_service_address={address!r}: no tf.data service dispatcher answers "
        f"({error.strerror or error}); start one with `python -m input_pipeline.data_service "
        "--dispatcher --port=...`, or set --config.input.data_service_address='' to feed "
        "locally.") from error


def check_serving(address: str, timeout_seconds: float) -> None:
  """Raises unless the tf.data service at `address` serves one element within `timeout_seconds`.

  Something that accepts connections but does not serve (a port of another
  program, a dispatcher without workers, workers that cannot reach it) makes
  the service client wait forever, inside TensorFlow, where the first batch
  is taken: no error, and no signal handled. So before training a one-element
  dataset goes through the service on a daemon thread while the main thread
  waits in Python, where stop signals are handled (`preemption.wait_for`).
  A thread that is still waiting when the run ends is left behind: it holds
  no file and ends with the process.

  Raises:
    errors.ConfigError: nothing was served in time; names the address, the
      wait and the fixes.
    errors.Preempted: a stop signal arrived during the wait (exit 75).
  """
  check_reachable(address)
  done = threading.Event()
  failure = []

  def take_one_element():
    try:
      probe = distribute(tf.data.Dataset.range(1), address, job_name="", pipeline_id=0)
      for _ in probe:
        pass
    except Exception as error:  # pylint: disable=broad-except
      failure.append(error)  # Reported by the main thread, in its one line.
    done.set()

  logging.info("Waiting up to %g s for the tf.data service at %s to serve a test element.",
               timeout_seconds, address)
  started = time.monotonic()
  threading.Thread(target=take_one_element, name="data-service-check", daemon=True).start()
  received = preemption.wait_for(done, timeout_seconds)
  if received is not None:
    raise errors.Preempted(
        f"stopped on {received}'s request while waiting for the tf.data service at "
        f"{address} to serve (after {time.monotonic() - started:.0f} s), before any training "
        "step; rerun the same command to start.")
  if failure:
    raise errors.ConfigError(
        f"input.data_service_address={address!r}: the tf.data service failed to serve "
        f"({errors.describe(failure[0])}); check that it is a tf.data service dispatcher with "
        "workers, or set --config.input.data_service_address='' to feed locally.")
  if not done.is_set():
    raise errors.ConfigError(
        f"input.data_service_address={address!r} accepts connections but served nothing in "
        f"{timeout_seconds:g} s (input.data_service_timeout_seconds): it is not a tf.data "
        "service dispatcher, or it has no workers; start workers with `python -m "
        "input_pipeline.data_service --worker --dispatcher_address=...`, fix the address, raise "
        "--config.input.data_service_timeout_seconds, or set "
        "--config.input.data_service_address='' to feed locally.")
  logging.info("The tf.data service at %s served a test element in %.1f s.", address,
               time.monotonic() - started)


def check_timeout(value) -> None:
  """Raises errors.ConfigError unless `input.data_service_timeout_seconds` is a finite number > 0."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0 < value < float("inf")):
    raise errors.ConfigError(
        f"input.data_service_timeout_seconds={value!r} must be a finite number of seconds > 0, "
        "e.g. --config.input.data_service_timeout_seconds=120.")


def distribute(dataset: tf.data.Dataset, address: str, job_name: str,
               pipeline_id: int) -> tf.data.Dataset:
  """`dataset` produced by the service at `address` instead of in this process.

  Each input pipeline (one per host) gets a job of its own: their datasets
  differ (each reads its own shard), and a job serves one dataset.
  """
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=PROCESSING_MODE, service=address,
      job_name=f"{job_name}-{pipeline_id}" if job_name else None))


_DISPATCHER = flags.DEFINE_bool("dispatcher", False, "Run a dispatcher.")
_WORKER = flags.DEFINE_bool("worker", False, "Run a worker.")
_PORT = flags.DEFINE_integer("port", 5050, "Port to serve on (0: any free port).")
_DISPATCHER_ADDRESS = flags.DEFINE_string(
    "dispatcher_address", "localhost:5050", "Worker: the dispatcher's host:port.")
_ALL_INTERFACES = flags.DEFINE_bool(
    "all_interfaces", False,
    "Required: start the server although it listens on every network interface, without "
    "authentication (TensorFlow's tf.data service cannot bind to localhost only).")
_WORKER_HOST = flags.DEFINE_string(
    "worker_host", "localhost",
    "Worker: the host name the dispatcher tells clients to reach it at; set it to this "
    "machine's name or IP when clients run elsewhere.")


def main(argv) -> None:
  del argv
  if _DISPATCHER.value == _WORKER.value:
    raise app.UsageError("Pass exactly one of --dispatcher or --worker.")
  if not _ALL_INTERFACES.value:
    raise app.UsageError(
        f"the tf.data service listens on port {_PORT.value} of every network interface and "
        "takes no credentials (TensorFlow has no bind address for it): anyone who reaches the "
        "port can run tf.data pipelines on the workers. Pass --all_interfaces to start it "
        "anyway, on a trusted network or behind a firewall.")
  if _DISPATCHER.value:
    server = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=_PORT.value))
    logging.info("tf.data service dispatcher at %s.", server.target)
  else:
    server = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=_DISPATCHER_ADDRESS.value, port=_PORT.value,
            worker_address=f"{_WORKER_HOST.value}:%port%"))
    logging.info("tf.data service worker on port %d, dispatcher %s.", _PORT.value,
                 _DISPATCHER_ADDRESS.value)
  server.join()


if __name__ == "__main__":
  app.run(main)
