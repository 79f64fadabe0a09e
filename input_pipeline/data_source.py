"""Where the images come from: a TFDS builder, with the bundled MNIST as offline fallback.

Resolution order for the data_dir:
1. `config.data_dir` when set;
2. TFDS's own default (which honours TFDS_DATA_DIR) when it holds a prepared copy;
3. the copy of TFDS's prepared `mnist` 3.0.1 bundled in this package, for mnist, so
   that training works on a fresh machine without internet;
4. otherwise TFDS's default, where TFDS downloads and prepares the dataset.
Errors name the dataset, the directory and the fix rather than surfacing a raw
TFDS traceback.

`create_data_source(config)` resolves all of that once per run into a
`DataSource`: the builder, the split sizes, the image shape and the step
counts. Everything downstream (pipelines, validation, the benchmark) takes that
object instead of looking the dataset up again, so N workers reading a gs://
data_dir read its metadata once each, and "which data" is decided here only.
"""

import contextlib
import dataclasses
import math
import os

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader as tfds_downloader

from input_pipeline import storage
from trainer import errors
from trainer import safe_files

# TFDS data_dir holding the prepared mnist 3.0.1 shipped with this package.
BUNDLED_DATA_DIR = os.path.join(os.path.dirname(__file__), "data", "tensorflow_datasets")
# Dataset names available in BUNDLED_DATA_DIR.
BUNDLED_DATASETS = ("mnist",)
# Image shape every dataset must have: the models are built for it.
IMAGE_SHAPE = (28, 28, 1)



@dataclasses.dataclass(frozen=True)
class DataSource:
  """The data of one run, resolved once: what to read and how many steps it makes.

  Attributes:
    builder: the TFDS builder, with its data_dir chosen (see the module docstring).
    train_split: TFDS split (or slice) to train on.
    eval_split: TFDS split (or slice) to evaluate on.
    num_train_examples: examples in `train_split`.
    num_eval_examples: examples in `eval_split`.
    image_shape: shape of one image, (28, 28, 1).
    steps_per_epoch: full global training batches per epoch; the remainder of
      the split is dropped, so every step has the same static shape.
    num_eval_steps: global evaluation batches covering the whole eval split; the
      last one is padded (with zero-weight examples) to full size. With
      `train.eval_batch_size` above the split's size, one batch, no larger than
      the split (rounded up to a multiple of the replicas).
  """
  builder: tfds.core.DatasetBuilder
  train_split: str
  eval_split: str
  num_train_examples: int
  num_eval_examples: int
  image_shape: tuple[int, int, int]
  steps_per_epoch: int
  num_eval_steps: int

  @property
  def name(self) -> str:
    return self.builder.name


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full global batches in one pass over `num_examples`.

  Independent of the number of input pipelines: each of P pipelines reads
  every P-th example, at least num_examples // P of them, and needs only
  steps * global_batch_size / P, which is never more.
  """
  return num_examples // global_batch_size


def num_eval_steps(num_examples: int, global_batch_size: int) -> int:
  """Global batches that cover `num_examples`, the last one padded."""
  return math.ceil(num_examples / global_batch_size)


def split_size(builder: tfds.core.DatasetBuilder, split: str, field: str) -> int:
  """Examples in `split` (a split or slice) of the dataset; ConfigError naming `field` if none."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as error:
    raise errors.ConfigError(
        f"{field}={split!r} is not a split of TFDS dataset {builder.name!r} (its splits: "
        f"{', '.join(sorted(builder.info.splits.keys()))}; slices such as 'train[:10%]' "
        f"work); set --config.{field}=...") from error


def create_data_source(config) -> DataSource:
  """Resolves, checks and (if needed) prepares the dataset of `config`, once.

  Raises:
    ValueError: unknown dataset or split, wrong image shape, or a split with
      fewer examples than one training batch.
    errors.DatasetUnavailableError: the dataset is not prepared and cannot be downloaded.
  """
  builder = get_builder(config.dataset, config.data_dir)
  # Prepared first: an unprepared dataset's metadata has no splits yet.
  ensure_prepared(builder)
  num_train_examples = split_size(builder, config.train_split, "train_split")
  num_eval_examples = split_size(builder, config.eval_split, "eval_split")
  steps = steps_per_epoch(num_train_examples, config.train.batch_size)
  if steps < 1:
    raise errors.ConfigError(
        f"train_split {config.train_split!r} has {num_train_examples} examples, fewer "
        f"than one batch of train.batch_size={config.train.batch_size}; lower the batch size.")
  if num_eval_examples < 1:
    raise errors.ConfigError(f"eval_split {config.eval_split!r} is empty; choose another eval_split.")
  verify_records(builder, (config.train_split, config.eval_split))
  if config.train.eval_batch_size > num_eval_examples:
    logging.warning(
        "train.eval_batch_size=%d exceeds the %d examples of eval_split %r: evaluating them "
        "in one batch of about %d instead (padding to %d would only add blank images).",
        config.train.eval_batch_size, num_eval_examples, config.eval_split,
        num_eval_examples, config.train.eval_batch_size)
  return DataSource(
      builder=builder,
      train_split=config.train_split,
      eval_split=config.eval_split,
      num_train_examples=num_train_examples,
      num_eval_examples=num_eval_examples,
      image_shape=IMAGE_SHAPE,
      steps_per_epoch=steps,
      num_eval_steps=num_eval_steps(num_eval_examples, config.train.eval_batch_size),
  )


# Download attempts per file when preparing a dataset. TFDS's own 10, with
# exponential backoff, make an offline machine wait about 3.5 minutes to fail.
_DOWNLOAD_RETRIES = 2


def _create_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    return tfds.builder(dataset, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise errors.ConfigError(
        f"Unknown TFDS dataset {dataset!r}; set --config.dataset to a TFDS dataset "
        "of 28x28x1 images such as mnist, fashion_mnist, kmnist or emnist/digits."
    ) from error
  except Exception as error:  # pylint: disable=broad-except
    # A garbled dataset_info.json or features.json surfaces as one of many
    # parsing errors (protobuf, json, ...); all mean the prepared copy is broken.
    raise errors.DatasetUnavailableError(
        f"TFDS dataset {dataset!r} in {data_dir or 'the default data_dir'} is unreadable "
        f"({errors.describe(error, 300)}); rebuild it with `tfds build {dataset} --data_dir=DIR` "
        "or remove the broken copy.") from error



def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """`builder.is_prepared()`, without TFDS's warning when the folder simply does not exist."""
  info_path = os.path.join(os.fspath(builder.data_dir), "dataset_info.json")
  return tf.io.gfile.exists(info_path) and builder.is_prepared()


def get_builder(dataset: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Returns the TFDS builder for `dataset`, choosing the data_dir as the module docstring says.

  Does not download anything: see `ensure_prepared`.

  Raises:
    ValueError: the dataset is unknown to TFDS or its images are not 28x28x1.
    errors.DatasetUnavailableError: `data_dir` is a local path that does not exist.
    errors.UnreachableError: `data_dir` is a gs:// (or other non-local) path
      that does not exist or cannot be reached.
  """
  if data_dir and storage.is_remote(data_dir):
    storage.check_usable(data_dir, "--config.data_dir", writable=False)
  elif data_dir and not os.path.isdir(data_dir):
    # TFDS would create it and look for (or download) the data there: a typo
    # would silently leave a stray directory and a download attempt.
    raise errors.DatasetUnavailableError(
        f"data_dir={data_dir} does not exist; fix --config.data_dir, or leave it empty for "
        "the default (or the bundled MNIST).")
  builder = _create_builder(dataset, data_dir)
  if not data_dir and builder.name in BUNDLED_DATASETS and not is_prepared(builder):
    bundled = _create_builder(dataset, BUNDLED_DATA_DIR)
    if is_prepared(bundled):
      logging.log_first_n(
          logging.INFO, "TFDS has no prepared %s in %s; reading the bundled copy in %s.",
          1, dataset, builder.data_dir, BUNDLED_DATA_DIR)
      builder = bundled
  check_image_shape(builder)
  return builder


def check_image_shape(builder: tfds.core.DatasetBuilder) -> None:
  """Raises ValueError naming the shape unless the dataset has 28x28x1 `image`s."""
  features = builder.info.features
  if "image" not in features:
    raise errors.ConfigError(
        f"TFDS dataset {builder.name!r} has no 'image' feature (features: "
        f"{', '.join(features.keys())}); choose an image dataset such as mnist.")
  shape = tuple(features["image"].shape)
  if shape != IMAGE_SHAPE:
    raise errors.ConfigError(
        f"TFDS dataset {builder.name!r} has images of shape {shape}, but dae-trainer "
        f"needs {IMAGE_SHAPE}; choose a 28x28 grayscale dataset such as mnist, "
        "fashion_mnist, kmnist or emnist/digits.")


def verify_records(builder: tfds.core.DatasetBuilder, splits) -> None:
  """Reads every record of the splits' files once, without decoding, and counts them.

  A truncated or garbled shard would otherwise fail in the middle of the first
  epoch, after the run has started writing. For MNIST this takes about 0.5 s.

  Raises:
    errors.DatasetUnavailableError: a file is unreadable or holds the wrong number of records.
  """
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    return
  for split in sorted({tfds.core.ReadInstruction.from_spec(split).split_name
                       for split in splits}):
    info = builder.info.splits[split]
    paths = [os.fspath(path) for path in info.filepaths]
    try:
      # Batched, counting is one op per 10,000 records (a per-record reduce is
      # five times slower).
      count = sum(int(size) for size in tf.data.TFRecordDataset(paths).batch(10_000).map(
          lambda records: tf.size(records, out_type=tf.int64)))
    except tf.errors.OpError as error:
      raise errors.DatasetUnavailableError(
          f"TFDS dataset {builder.name!r} in {builder.data_dir} has a corrupt {split} file "
          f"among {', '.join(paths)} ({errors.describe(error, 300)}); rebuild it with `tfds build "
          f"{builder.name} --data_dir=DIR`.") from error
    if count != info.num_examples:
      raise errors.DatasetUnavailableError(
          f"TFDS dataset {builder.name!r} in {builder.data_dir}: the {split} files hold "
          f"{count} records, its dataset_info.json says {info.num_examples}; rebuild it "
          f"with `tfds build {builder.name} --data_dir=DIR`.")


@contextlib.contextmanager
def _few_download_retries():
  # TFDS reads this module constant each time it opens a URL.
  retries, tfds_downloader.MAX_RETRIES = tfds_downloader.MAX_RETRIES, _DOWNLOAD_RETRIES
  try:
    yield
  finally:
    tfds_downloader.MAX_RETRIES = retries


def _remove_partial_download(data_dir_root: str, existed: set[str]) -> None:
  """Removes what a failed download_and_prepare left: temporary and incomplete files."""
  for directory, subdirectories, files in tf.io.gfile.walk(data_dir_root, topdown=False):
    for name in files + subdirectories:
      path = os.path.join(directory, name)
      if path not in existed and (".tmp" in name or "incomplete" in name):
        if tf.io.gfile.isdir(path):
          safe_files.remove_tree(path)
        else:
          tf.io.gfile.remove(path)


def _listing(directory: str) -> set[str]:
  if not tf.io.gfile.isdir(directory):
    return set()
  return {os.path.join(parent, name) for parent, subdirectories, files in
          tf.io.gfile.walk(directory) for name in files + subdirectories}


def ensure_prepared(builder: tfds.core.DatasetBuilder) -> None:
  """Downloads and prepares the dataset if needed, or raises errors.DatasetUnavailableError saying how to fix it."""
  if is_prepared(builder):
    return
  logging.info("Preparing TFDS dataset %s in %s.", builder.name, builder.data_dir)
  data_dir_root = os.fspath(builder.data_dir_root)
  existed = _listing(data_dir_root)
  try:
    with _few_download_retries():
      builder.download_and_prepare()
  except Exception as error:  # pylint: disable=broad-except
    # Download errors come from many libraries (requests, urllib3, TFDS's own
    # checksum and manual-dir errors); they all mean the same thing to the user.
    _remove_partial_download(data_dir_root, existed)
    cause = errors.describe(error, 300)
    raise errors.DatasetUnavailableError(
        f"TFDS dataset {builder.name!r} is not prepared in {builder.data_dir} and could "
        f"not be downloaded ({cause[:300]}). Fix: on a machine with internet run "
        f"`tfds build {builder.name} --data_dir=DIR`, copy DIR here and pass "
        "--config.data_dir=DIR (or set TFDS_DATA_DIR=DIR); or put the original "
        f"archives in {builder.data_dir_root}/downloads/manual and run again."
    ) from error
