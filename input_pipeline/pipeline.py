"""tf.data pipelines of (noisy, clean) image pairs for training and evaluation.

`create_dataset(data, config, split, input_context)` is the only entry point
the trainer needs; `data` is the run's `data_source.DataSource`, resolved once.
Both splits share `preprocess`: scale uint8 images to [0, 1], corrupt them with
`noise.add_noise` and clip, so train and eval never differ in preprocessing,
only in how the noise is seeded:

- training noise is fresh for every batch of every epoch, seeded by
  (seed, epoch, input pipeline, batch index), so a run resumed at any step
  sees exactly the data an uninterrupted run would have seen;
- evaluation noise is seeded per test image (by its index in the split), so
  the noisy test set is the same at every epoch, in every run with the same
  seed, whatever the batch size or number of replicas. Because it never
  changes, it is computed once and cached.

Every batch has a static shape (TPUs need it): training drops the split's
remainder, evaluation pads its last batch with zero-weight examples, so the
metrics, weighted by the third element of each eval batch, stay exact.

Under several workers or TPU hosts, each input pipeline (one per host, from
`input_context`) reads every n-th example and produces the same number of
batches as every other pipeline, so no worker waits on another at epoch ends.
"""

import math

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import data_service
from input_pipeline import data_source
from input_pipeline import noise

# Roles of `create_dataset`, mapped to `config.train_split` / `config.eval_split`.
SPLITS = ("train", "eval")
# Independent random streams derived from `config.seed`.
_TRAIN_NOISE_STREAM = 1
_EVAL_NOISE_STREAM = 2
_SHUFFLE_STREAM = 3
_NOISE_TABLE_STREAM = 4
# A batch size larger than any split: one batch of all its examples.
_ALL_EXAMPLES = 2**31 - 1
# How every reader of a split (these pipelines, the evaluation, the pipeline's
# scores) reads it: the readers cache decoded or noisy images themselves, and
# TFDS's automatic cache of the encoded records would only double the memory.
READ_CONFIG = tfds.ReadConfig(try_autocache=False)


def scale_images(images: tf.Tensor) -> tf.Tensor:
  """uint8 pixels -> float32 in [0, 1]: the one scaling of training, evaluation and serving."""
  return tf.cast(images, tf.float32) / 255.0


def preprocess(images: tf.Tensor, noise_config: ml_collections.ConfigDict,
               seed: tf.Tensor, table: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
  """Maps uint8 images (one or a batch) to a (noisy, clean) pair of float32 in [0, 1]."""
  clean = scale_images(images)
  return noise.add_noise(clean, noise_config, seed, table), clean


def _shard(dataset: tf.data.Dataset, input_context) -> tf.data.Dataset:
  # Shard by element, not by file: mnist has a single file per split, and
  # file-based sharding would starve every pipeline but one.
  if input_context and input_context.num_input_pipelines > 1:
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  return dataset


def _read_examples(data: data_source.DataSource, tfds_split: str) -> tf.data.Dataset:
  return data.builder.as_dataset(split=tfds_split, shuffle_files=False,
                                 read_config=READ_CONFIG)


def _seed(config: ml_collections.ConfigDict, stream: int) -> tf.Tensor:
  return tf.constant([config.seed, stream], dtype=tf.int64)


def _batching(global_batch_size: int, input_context) -> tuple[int, int]:
  """(per-replica batch size, replicas fed by this pipeline)."""
  if input_context is None:
    return global_batch_size, 1
  replicas_per_pipeline = (input_context.num_replicas_in_sync
                           // input_context.num_input_pipelines)
  return input_context.get_per_replica_batch_size(global_batch_size), replicas_per_pipeline


def create_dataset(data: data_source.DataSource, config: ml_collections.ConfigDict,
                   split: str, input_context: tf.distribute.InputContext | None = None,
                   start_step: int = 0) -> tf.data.Dataset:
  """Returns a dataset of per-replica batches [batch, 28, 28, 1] for one input pipeline.

  Args:
    data: the run's data source.
    config: the full training config.
    split: "train": (noisy, clean) batches from global step `start_step` to the
      end of epoch `config.train.num_epochs - 1`, shuffled, `data.steps_per_epoch`
      global steps per epoch; or "eval": (noisy, clean, weight) batches, one pass over
      `data.eval_split` with fixed noise, `data.num_eval_steps` global steps,
      weight 1 for real examples and 0 for the padding of the last batch.
    input_context: from `strategy.distribute_datasets_from_function`; None for
      a single pipeline feeding one replica.
    start_step: first global training step to produce (when resuming).
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; valid splits are {', '.join(SPLITS)}.")
  if split == "train":
    dataset = _create_train_dataset(data, config, input_context, start_step)
    if config.input.data_service_address:
      dataset = data_service.distribute(
          dataset, config.input.data_service_address, config.input.data_service_job_name,
          input_context.input_pipeline_id if input_context else 0).prefetch(tf.data.AUTOTUNE)
    return dataset
  return _create_eval_dataset(data, config, input_context)


def _create_train_dataset(data, config, input_context, start_step):
  """Order: images in memory -> (per epoch) shuffle indices -> batch -> index -> skip done steps
  -> gather, noise -> prefetch."""
  batch_size, replicas_per_pipeline = _batching(config.train.batch_size, input_context)
  # Batches this pipeline contributes per epoch: the same number of global steps
  # on every pipeline, so workers never wait on each other at epoch ends.
  num_batches = data.steps_per_epoch * replicas_per_pipeline
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  start_epoch, start_step_in_epoch = divmod(start_step, data.steps_per_epoch)

  # This pipeline's decoded uint8 images as one tensor (47 MB for MNIST), decoded
  # once. Every epoch shuffles their indices, not the images: the shuffle buffer
  # then holds int64s instead of 784-byte images, and each batch is one gather
  # instead of 128 element copies. The shuffle's order does not depend on what
  # it shuffles, so the batches are exactly those of shuffling the images.
  images = _shard(_read_examples(data, data.train_split).map(
      lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE), input_context)
  images = images.batch(_ALL_EXAMPLES).get_single_element()
  shuffle_seed = _seed(config, _SHUFFLE_STREAM)
  noise_seed = tf.random.experimental.stateless_fold_in(
      _seed(config, _TRAIN_NOISE_STREAM), pipeline_id)
  # With noise.generator='table', Gaussian values come from this table, drawn
  # once per pipeline from a stream of its own (None: exact, fresh per batch).
  table = noise.gaussian_table(config.noise, tf.random.experimental.stateless_fold_in(
      _seed(config, _NOISE_TABLE_STREAM), pipeline_id), math.prod(images.shape[1:]))

  def epoch_dataset(epoch):
    # Seeds are functions of the epoch, not of iterator state: resuming at
    # any step reproduces exactly the batches an uninterrupted run sees.
    epoch_shuffle_seed = tf.random.stateless_uniform(
        [], seed=tf.random.experimental.stateless_fold_in(shuffle_seed, epoch),
        minval=None, maxval=None, dtype=tf.int64)
    epoch_noise_seed = tf.random.experimental.stateless_fold_in(noise_seed, epoch)
    # Shuffle within the epoch, then batch: every image is seen once per epoch.
    # drop_remainder keeps shapes static (required on TPU).
    batches = tf.data.Dataset.range(tf.shape(images, out_type=tf.int64)[0]).shuffle(
        config.train.shuffle_buffer_size, seed=epoch_shuffle_seed)
    batches = batches.batch(batch_size, drop_remainder=True).take(num_batches).enumerate()
    # Resuming mid-epoch: skip the steps already trained. The skipped batches
    # keep their indices, so the batches that follow get the noise they would
    # have had; only indices are skipped, no image is gathered or noised.
    done = tf.where(epoch == start_epoch, start_step_in_epoch * replicas_per_pipeline, 0)
    batches = batches.skip(tf.cast(done, tf.int64))
    # Noise is added after batching, one vectorised op per batch.
    return batches.map(
        lambda index, batch_indices: preprocess(
            tf.gather(images, batch_indices), config.noise,
            tf.random.experimental.stateless_fold_in(epoch_noise_seed, index), table),
        num_parallel_calls=tf.data.AUTOTUNE)

  dataset = tf.data.Dataset.range(start_epoch, config.train.num_epochs)
  dataset = dataset.flat_map(epoch_dataset)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _noisy_eval_pairs(data, config, input_context):
  """Unbatched (noisy, clean) eval pairs, each image with its own fixed noise."""
  eval_seed = _seed(config, _EVAL_NOISE_STREAM)
  # Evaluation always uses the reference noise (one type, one level), also for
  # blind models trained on a range of levels or a mixture of types, so that
  # every run's eval numbers measure the same task.
  eval_noise = noise.NoiseSpec.from_config(config.noise)
  # The index is taken before sharding: an image's noise depends only on its
  # position in the split, never on how many pipelines or replicas there are.
  dataset = _shard(_read_examples(data, data.eval_split).enumerate(), input_context)
  return dataset.map(
      lambda index, example: preprocess(
          example["image"], eval_noise,
          tf.random.experimental.stateless_fold_in(eval_seed, index)),
      num_parallel_calls=tf.data.AUTOTUNE)


def _create_eval_dataset(data, config, input_context):
  """Order: index -> shard -> noise per image -> cache -> pad -> batch -> prefetch."""
  batch_size, replicas_per_pipeline = _batching(config.train.eval_batch_size, input_context)
  if data.num_eval_steps == 1:
    # train.eval_batch_size holds the whole split: pad only up to this
    # pipeline's share, not to the batch size (100,000 for 256 images would
    # be 0.6 GB of blank images). See `data_source.create_data_source`.
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    share = -(-data.num_eval_examples // num_pipelines)
    batch_size = min(batch_size, -(-share // replicas_per_pipeline))
  num_padded_examples = data.num_eval_steps * replicas_per_pipeline * batch_size
  # The noisy test set never changes, so it is computed once and cached.
  examples = _noisy_eval_pairs(data, config, input_context).map(
      lambda noisy, clean: (noisy, clean, tf.constant(1.0))).cache()
  # Zero-weight blank images fill the last batch (and, when the split does not
  # divide evenly, give every pipeline the same number of batches).
  blank = tf.zeros(data.image_shape, tf.float32)
  padding = tf.data.Dataset.from_tensors((blank, blank, tf.constant(0.0))).repeat()
  dataset = examples.concatenate(padding).take(num_padded_examples)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def first_eval_examples(data: data_source.DataSource, config: ml_collections.ConfigDict,
                        num_examples: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(noisy, clean) of the first `num_examples` eval images, with the evaluation's own noise."""
  dataset = _noisy_eval_pairs(data, config, input_context=None)
  return next(iter(dataset.batch(num_examples)))
