"""Builds the tf.distribute strategy named in `config.runtime`.

One training loop runs under every strategy; only this module knows how each
one is created.
"""

from absl import logging
import ml_collections
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


def _split_cpu(num_cpu_devices: int) -> None:
  """Splits the physical CPU into logical devices; only possible before TF initialises them."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  configuration = [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
  try:
    tf.config.set_logical_device_configuration(cpu, configuration)
  except RuntimeError as error:
    existing = len(tf.config.list_logical_devices("CPU"))
    if existing != num_cpu_devices:
      raise ValueError(
          f"runtime.num_cpu_devices={num_cpu_devices} cannot be applied: TensorFlow "
          f"already initialised {existing} CPU device(s) in this process. Set it in "
          "the first job of a fresh process.") from error


def check_strategy_name(name: str) -> None:
  if name not in STRATEGIES:
    raise ValueError(
        f"Unknown runtime.strategy {name!r}; valid strategies are "
        f"{', '.join(STRATEGIES)} (set --config.runtime.strategy=...).")


def get_strategy(runtime_config: ml_collections.ConfigDict) -> tf.distribute.Strategy:
  """Returns the strategy for `runtime_config.strategy`.

  Raises:
    ValueError: the name is not one of STRATEGIES.
  """
  name = runtime_config.strategy
  check_strategy_name(name)
  if runtime_config.num_cpu_devices > 0:
    _split_cpu(runtime_config.num_cpu_devices)
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "mirrored":
    devices = [d.strip() for d in runtime_config.devices.split(",") if d.strip()]
    strategy = tf.distribute.MirroredStrategy(devices=devices or None)
  elif name == "multi_worker_mirrored":
    # The cluster comes from TF_CONFIG.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=runtime_config.tpu_address or None)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
  logging.info("Strategy %s with %d replica(s); devices: %s.", name,
               strategy.num_replicas_in_sync,
               ", ".join(device.name for device in tf.config.list_logical_devices()))
  return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the one task that writes checkpoints, summaries and reports."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def num_input_pipelines(strategy: tf.distribute.Strategy) -> int:
  """How many input pipelines `distribute_datasets_from_function` creates: one per worker."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))
  return 1
