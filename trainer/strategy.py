"""Builds the tf.distribute strategy named in `config.runtime`, and says which task this is.

One training loop runs under every strategy; only this module knows how each
one is created, which task is the chief, and how a lost peer shows itself.
"""

import contextlib
import os
import re

from absl import logging
import ml_collections
import tensorflow as tf

from trainer import errors

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
# The TPU that `runtime.tpu_address=""` means: a TPU VM's own chips.
_LOCAL_TPU = "local"
# How tf.distribute names a task in its errors: /job:worker/replica:0/task:1.
_TASK_PATTERN = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")



def _split_cpu(num_cpu_devices: int) -> None:
  """Splits the physical CPU into logical devices; only possible before TF initialises them."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  configuration = [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
  try:
    tf.config.set_logical_device_configuration(cpu, configuration)
  except RuntimeError as error:
    existing = len(tf.config.list_logical_devices("CPU"))
    if existing != num_cpu_devices:
      raise errors.ConfigError(
          f"runtime.num_cpu_devices={num_cpu_devices} cannot be applied: TensorFlow "
          f"already initialised {existing} CPU device(s) in this process. Set it in "
          "the first job of a fresh process.") from error


def check_strategy_name(name: str) -> None:
  if name not in STRATEGIES:
    raise errors.ConfigError(
        f"Unknown runtime.strategy {name!r}; valid strategies are "
        f"{', '.join(STRATEGIES)} (set --config.runtime.strategy=...).")


def _multi_worker_strategy(runtime_config) -> tf.distribute.Strategy:
  if "TF_CONFIG" not in os.environ:
    logging.warning("runtime.strategy=multi_worker_mirrored without TF_CONFIG: this "
                    "process is a cluster of one worker.")
  # A dead peer is normally noticed within seconds by the coordination service's
  # heartbeats; the timeout bounds every collective in case it is not.
  options = tf.distribute.experimental.CommunicationOptions(
      timeout_seconds=runtime_config.collective_timeout_seconds)
  return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _tpu_strategy(runtime_config) -> tf.distribute.Strategy:
  address = runtime_config.tpu_address or _LOCAL_TPU
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (tf.errors.OpError, ValueError, RuntimeError) as error:
    cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
    raise errors.ConfigError(
        f"runtime.strategy=tpu: no TPU found at {address!r} ({type(error).__name__}: "
        f"{cause[:200]}). Run on a Cloud TPU VM (runtime.tpu_address='' means its own "
        "TPU), or set --config.runtime.tpu_address to the TPU's name or grpc:// address."
    ) from error
  return tf.distribute.TPUStrategy(resolver)


def get_strategy(runtime_config: ml_collections.ConfigDict) -> tf.distribute.Strategy:
  """Returns the strategy for `runtime_config.strategy`.

  Raises:
    ValueError: the name is not one of STRATEGIES, the CPU cannot be split, or
      no TPU answers at the configured address.
  """
  name = runtime_config.strategy
  check_strategy_name(name)
  if runtime_config.num_cpu_devices > 0:
    _split_cpu(runtime_config.num_cpu_devices)
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "mirrored":
    # No devices listed: every local GPU (or the CPU if there is none).
    devices = [d.strip() for d in runtime_config.devices.split(",") if d.strip()]
    strategy = tf.distribute.MirroredStrategy(devices=devices or None)
  elif name == "multi_worker_mirrored":
    strategy = _multi_worker_strategy(runtime_config)
  else:
    strategy = _tpu_strategy(runtime_config)
  logging.info("Strategy %s with %d replica(s) on %s; devices: %s.", name,
               strategy.num_replicas_in_sync, task_name(strategy),
               ", ".join(device.name for device in tf.config.list_logical_devices()))
  return strategy


def is_default(strategy: tf.distribute.Strategy) -> bool:
  """True for TensorFlow's default strategy: one device, no replicas to all-reduce.

  Conservative inside another strategy's scope, where it answers False.
  """
  return not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy()


def _task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def task_name(strategy: tf.distribute.Strategy) -> str:
  """"chief 0", "worker 1", ...; "the only task" outside a cluster."""
  task_type, task_id = _task(strategy)
  return f"{task_type} {task_id}" if task_type else "the only task"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one task that writes checkpoints, summaries and reports."""
  task_type, task_id = _task(strategy)
  if task_type is None:
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "chief" or (
      task_type == "worker" and task_id == 0 and "chief" not in cluster)


def lost_peer_error(error: tf.errors.OpError, strategy: tf.distribute.Strategy) -> errors.PeerLostError:
  """A one-line errors.PeerLostError naming the task that `error` (from a collective) lost."""
  own_task = "/job:{}/replica:0/task:{}".format(*_task(strategy))
  text = str(error)
  # The coordination service lists the unhealthy tasks on the lines after this phrase.
  unhealthy = text.split("unhealthy", 1)[1] if "unhealthy" in text else text
  peers = [f"{job} {task}" for job, task in _TASK_PATTERN.findall(unhealthy)
           if f"/job:{job}/replica:0/task:{task}" != own_task]
  peer = peers[0] if peers else "another task (unnamed in the error)"
  cause = type(error).__name__
  return errors.PeerLostError(
      f"{task_name(strategy)} lost contact with {peer} ({cause}); the job cannot go on. "
      "Restart every task with the same command: training resumes from the last checkpoint.")



@contextlib.contextmanager
def watch_peers(strategy: tf.distribute.Strategy):
  """Turns a collective failing because a peer task died into a one-line errors.PeerLostError.

  The coordination service notices a dead task within seconds and aborts the
  collectives of every other task with UnavailableError; a task that hangs
  instead ends in DeadlineExceededError once `runtime.collective_timeout_seconds`
  pass. Outside multi-worker jobs errors pass through unchanged.
  """
  try:
    yield
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
      raise lost_peer_error(error, strategy) from error
    raise
