"""tf.data pipelines on fake TFDS data: shapes, ranges, epochs, fixed eval noise, padding,
sharding; and on the bundled real MNIST: two pipelines see every training image once."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline


def _create(config, split, input_context=None, start_epoch=0):
  """The dataset as the trainer builds it: from the run's data source."""
  data = data_source.create_data_source(config)
  return pipeline.create_dataset(data, config, split, input_context,
                                 start_step=start_epoch * data.steps_per_epoch)


def _batches(dataset, count=None):
  """(noisy batches, clean batches) as numpy; eval batches' weights are dropped."""
  batches = [(element[0].numpy(), element[1].numpy()) for element in dataset.take(count or -1)]
  return [b[0] for b in batches], [b[1] for b in batches]


def _weights(dataset):
  return np.concatenate([weight.numpy() for _, _, weight in dataset])


def _contexts(num_pipelines):
  """Input contexts of `num_pipelines` workers with one replica each."""
  return [tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                     input_pipeline_id=index,
                                     num_replicas_in_sync=num_pipelines)
          for index in range(num_pipelines)]


@pytest.mark.parametrize("split", pipeline.SPLITS)
def test_elements_are_noisy_clean_pairs_in_unit_range(config, mock_mnist, split):
  with mock_mnist(200):
    dataset = _create(config, split)
    noisy, clean = _batches(dataset)
  batch_size = config.train.batch_size if split == "train" else config.train.eval_batch_size
  assert noisy[0].shape == clean[0].shape == (batch_size, 28, 28, 1)
  assert dataset.element_spec[0].dtype == tf.float32
  for images in noisy + clean:
    assert images.min() >= 0.0 and images.max() <= 1.0
  # Noise was added: the pairs differ.
  assert np.abs(noisy[0] - clean[0]).mean() > 0.1


def test_train_batches_are_full_and_static(config, mock_mnist):
  with mock_mnist(200):
    dataset = _create(config, "train")
    noisy, _ = _batches(dataset)
  # 200 images, batch 64: 3 full batches, the remainder is dropped (static shapes for TPU).
  assert len(noisy) == 3
  assert dataset.element_spec[0].shape == (64, 28, 28, 1)


def test_eval_keeps_every_image_in_full_padded_batches(config, mock_mnist):
  with mock_mnist(200):
    dataset = _create(config, "eval")
    _, clean = _batches(dataset)
    weights = _weights(dataset)
  # Static shapes (TPU): the last batch is padded to 128 with zero-weight blanks.
  assert [len(batch) for batch in clean] == [128, 128]
  assert dataset.element_spec[0].shape == (128, 28, 28, 1)
  np.testing.assert_array_equal(weights, [1.0] * 200 + [0.0] * 56)
  assert not np.concatenate(clean)[200:].any()


def test_training_noise_is_fresh_every_epoch(config, mock_mnist):
  config.train.shuffle_buffer_size = 1  # Same order every epoch: compare image by image.
  config.train.num_epochs = 3
  with mock_mnist(128):
    noisy_0, clean_0 = _batches(_create(config, "train", start_epoch=0), 2)
    noisy_1, clean_1 = _batches(_create(config, "train", start_epoch=1), 2)
    # In one iteration over all epochs, epoch 1 starts after epoch 0's two batches.
    noisy_all, clean_all = _batches(_create(config, "train"), 4)
  np.testing.assert_array_equal(clean_0[0], clean_1[0])
  assert (noisy_0[0] != noisy_1[0]).mean() > 0.3
  np.testing.assert_array_equal(noisy_all[2], noisy_1[0])
  np.testing.assert_array_equal(clean_all[2], clean_0[0])


def test_training_data_is_reproducible_per_epoch(config, mock_mnist):
  # What makes resuming at epoch k reproduce the uninterrupted run.
  config.train.num_epochs = 3
  with mock_mnist(128):
    first = _batches(_create(config, "train", start_epoch=2))
    again = _batches(_create(config, "train", start_epoch=2))
    config.seed += 1
    other_seed = _batches(_create(config, "train", start_epoch=2))
  for a, b in zip(first[0] + first[1], again[0] + again[1], strict=True):
    np.testing.assert_array_equal(a, b)
  assert (first[0][0] != other_seed[0][0]).mean() > 0.3


def test_resuming_mid_epoch_continues_the_same_batches(config):
  """Started at global step 37 (epoch 1, batch 5), the stream is the uninterrupted one from there."""
  config.train.num_epochs = 2
  data = data_source.create_data_source(config)
  uninterrupted = _batches(pipeline.create_dataset(data, config, "train"))
  resumed = _batches(pipeline.create_dataset(data, config, "train", start_step=37))
  assert len(uninterrupted[0]) == 64 and len(resumed[0]) == 64 - 37
  for a, b in zip(uninterrupted[0][37:] + uninterrupted[1][37:], resumed[0] + resumed[1],
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_training_order_is_reshuffled_every_epoch(config, mock_mnist):
  config.train.num_epochs = 2
  with mock_mnist(128):
    _, clean = _batches(_create(config, "train"))
  epoch_0, epoch_1 = np.concatenate(clean[:2]), np.concatenate(clean[2:])
  # Same images (sorted by content), different order.
  sort = lambda images: images[np.lexsort(images.reshape(len(images), -1).T)]
  np.testing.assert_array_equal(sort(epoch_0), sort(epoch_1))
  assert not np.array_equal(epoch_0, epoch_1)


def test_eval_noise_is_identical_between_runs_and_batch_sizes(config, mock_mnist):
  with mock_mnist(100):
    first, _ = _batches(_create(config, "eval"))
    again, _ = _batches(_create(config, "eval"))
    config.train.eval_batch_size = 30
    rebatched, _ = _batches(_create(config, "eval"))
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
  # The 100 (mock) images, before the padding that differs with the batch size.
  np.testing.assert_array_equal(np.concatenate(first)[:100], np.concatenate(rebatched)[:100])


def test_eval_noise_is_fixed_across_epochs_of_one_dataset(config, mock_mnist):
  with mock_mnist(100):
    dataset = _create(config, "eval")
    first, _ = _batches(dataset)
    second, _ = _batches(dataset)
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


def test_first_eval_examples_match_the_eval_dataset(config, mock_mnist):
  with mock_mnist(100):
    noisy, clean = pipeline.first_eval_examples(
        data_source.create_data_source(config), config, 10)
    eval_noisy, eval_clean = _batches(_create(config, "eval"), 1)
  np.testing.assert_array_equal(noisy.numpy(), eval_noisy[0][:10])
  np.testing.assert_array_equal(clean.numpy(), eval_clean[0][:10])


def test_input_pipelines_read_disjoint_shards(config, mock_mnist):
  """Two workers: element-wise shards, per-replica batches, same number of batches."""
  contexts = _contexts(2)
  config.train.shuffle_buffer_size = 1
  with mock_mnist(256):
    shards = [_batches(_create(config, "train", context))[1]
              for context in contexts]
    eval_shards = [_batches(_create(config, "eval", context))[1]
                   for context in contexts]
  assert len(shards[0]) == len(shards[1]) == 4  # 128 images each, per-replica batch 32.
  assert shards[0][0].shape == (32, 28, 28, 1)
  flat = [np.concatenate(shard).reshape(128, -1) for shard in shards]
  shared = {row.tobytes() for row in flat[0]} & {row.tobytes() for row in flat[1]}
  assert not shared
  assert [len(shard) for shard in eval_shards] == [2, 2]  # 128 images each, batch 64.


def test_two_pipelines_see_every_training_image_once_per_epoch(config):
  """On the real bundled MNIST, sharded as two workers of a multi-worker job see it."""
  config.train.num_epochs = 2
  data = data_source.create_data_source(config)
  assert data.steps_per_epoch == 32  # 2048 images, global batch 64.
  seen = []
  for context in _contexts(2):
    _, clean = _batches(pipeline.create_dataset(data, config, "train", context))
    # Per-replica batches of 32, the same number (32 per epoch) on both workers.
    assert len(clean) == 2 * data.steps_per_epoch and clean[0].shape == (32, 28, 28, 1)
    seen.append(np.concatenate(clean))
  split = np.stack([example["image"] for example in data.builder.as_dataset(
      split=config.train_split).as_numpy_iterator()]).astype(np.float32) / 255.0
  as_rows = lambda images: np.sort(images.reshape(len(images), -1).view(
      np.dtype((np.void, 784 * 4))).ravel())
  for epoch in range(2):
    epoch_images = np.concatenate([images[epoch * 1024:(epoch + 1) * 1024]
                                   for images in seen])
    # The same multiset of images as the split: each example exactly once.
    np.testing.assert_array_equal(as_rows(epoch_images), as_rows(split))


def test_uneven_eval_shards_pad_to_the_same_number_of_batches(config):
  """201 test images over 2 workers: 101 and 100, both padded to 2 batches of 64."""
  config.eval_split = "test[:201]"
  data = data_source.create_data_source(config)
  assert data.num_eval_steps == 2  # ceil(201 / 128)
  _, unsharded = pipeline.first_eval_examples(data, config, 201)
  real = []
  for context in _contexts(2):
    dataset = pipeline.create_dataset(data, config, "eval", context)
    _, clean = _batches(dataset)
    weights = _weights(dataset)
    assert [len(batch) for batch in clean] == [64, 64]
    real.append(np.concatenate(clean)[weights > 0])
  assert [len(images) for images in real] == [101, 100]
  np.testing.assert_array_equal(np.sort(np.concatenate(real), axis=None),
                                np.sort(unsharded.numpy(), axis=None))


def test_an_eval_batch_larger_than_the_split_pads_only_to_the_split(config, caplog):
  """eval_batch_size=100,000 for 201 images: one batch of 201 (101 per worker of 2), not 100,000."""
  config.eval_split = "test[:201]"
  config.train.eval_batch_size = 100_000
  data = data_source.create_data_source(config)
  assert "train.eval_batch_size=100000 exceeds the 201 examples" in caplog.text
  assert data.num_eval_steps == 1
  dataset = pipeline.create_dataset(data, config, "eval")
  assert dataset.element_spec[0].shape == (201, 28, 28, 1)
  assert _weights(dataset).tolist() == [1.0] * 201
  for context, real in zip(_contexts(2), (101, 100), strict=True):
    dataset = pipeline.create_dataset(data, config, "eval", context)
    assert dataset.element_spec[0].shape == (101, 28, 28, 1)
    assert _weights(dataset).tolist() == [1.0] * real + [0.0] * (101 - real)


def test_steps_per_epoch_and_eval_steps():
  assert data_source.steps_per_epoch(60_000, 128) == 468
  # Any number of pipelines can deliver these: 4 pipelines of 250 images, batches of 3.
  assert data_source.steps_per_epoch(1_001, 12) == 83
  assert data_source.num_eval_steps(10_000, 1000) == 10
  assert data_source.num_eval_steps(10_001, 1000) == 11


def test_unknown_split_is_rejected(config):
  with pytest.raises(ValueError, match="valid splits are train, eval"):
    _create(config, "test")


def test_unknown_tfds_split_names_the_splits(config):
  config.eval_split = "nonexistent"
  with pytest.raises(ValueError, match="eval_split='nonexistent' is not a split of TFDS "
                                       "dataset 'mnist' \\(its splits: test, train"):
    data_source.create_data_source(config)


def _digest(batches):
  digest = hashlib.sha256()
  for batch in batches:
    for part in batch:
      digest.update(part.numpy().tobytes())
  return digest.hexdigest()[:16]


def test_batches_are_byte_equal_to_those_recorded_before_the_pipeline_was_made_cheaper(config):
  """Digests of batches on the bundled MNIST, recorded from the pipeline of commit 886020d.

  A cheaper pipeline must feed training exactly the same bytes: the first
  batches, the first of a reshuffled second epoch, a resumed run's, and the
  whole noisy eval set.
  """
  config.train.num_epochs = 2
  data = data_source.create_data_source(config)
  iterator = iter(pipeline.create_dataset(data, config, "train"))
  batches = [next(iterator) for _ in range(data.steps_per_epoch + 2)]
  assert _digest(batches[:3]) == "77df1b46f5dcaa8c"
  assert _digest(batches[data.steps_per_epoch:]) == "fe91e629f210cd37"
  resumed = pipeline.create_dataset(data, config, "train", start_step=5).take(2)
  assert _digest(resumed) == "1370eb4824e51f0b"
  assert _digest(pipeline.create_dataset(data, config, "eval")) == "8b2b8eddc92ee847"


def test_the_table_generator_changes_training_noise_only(config, mock_mnist):
  table_config = config.copy_and_resolve_references()
  table_config.noise.generator = "table"
  table_config.noise.table_num_values = 65_536
  with mock_mnist(100):
    exact_noisy, exact_clean = _batches(_create(config, "train"), 3)
    table_noisy, table_clean = _batches(_create(table_config, "train"), 3)
    again_noisy, _ = _batches(_create(table_config, "train"), 3)
    np.testing.assert_array_equal(np.stack(exact_clean), np.stack(table_clean))
    assert (np.stack(exact_noisy) != np.stack(table_noisy)).mean() > 0.5
    np.testing.assert_array_equal(np.stack(table_noisy), np.stack(again_noisy))
    # Evaluation noise is always exact.
    np.testing.assert_array_equal(np.stack(_batches(_create(config, "eval"))[0]),
                                  np.stack(_batches(_create(table_config, "eval"))[0]))
