"""tf.data pipelines on fake TFDS data: shapes, ranges, epochs, fixed eval noise, sharding."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import pipeline


def _batches(dataset, count=None):
  batches = [(noisy.numpy(), clean.numpy()) for noisy, clean in dataset.take(count or -1)]
  return [b[0] for b in batches], [b[1] for b in batches]


@pytest.mark.parametrize("split", pipeline.SPLITS)
def test_elements_are_noisy_clean_pairs_in_unit_range(config, mock_mnist, split):
  with mock_mnist(200):
    dataset = pipeline.create_dataset(config, split)
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
    dataset = pipeline.create_dataset(config, "train")
    noisy, _ = _batches(dataset)
  # 200 images, batch 64: 3 full batches, the remainder is dropped (static shapes for TPU).
  assert len(noisy) == 3
  assert dataset.element_spec[0].shape == (64, 28, 28, 1)


def test_eval_keeps_every_image(config, mock_mnist):
  with mock_mnist(200):
    _, clean = _batches(pipeline.create_dataset(config, "eval"))
  assert [len(batch) for batch in clean] == [128, 72]


def test_training_noise_is_fresh_every_epoch(config, mock_mnist):
  config.train.shuffle_buffer_size = 1  # Same order every epoch: compare image by image.
  config.train.num_epochs = 3
  with mock_mnist(128):
    noisy_0, clean_0 = _batches(pipeline.create_dataset(config, "train", start_epoch=0), 2)
    noisy_1, clean_1 = _batches(pipeline.create_dataset(config, "train", start_epoch=1), 2)
    # In one iteration over all epochs, epoch 1 starts after epoch 0's two batches.
    noisy_all, clean_all = _batches(pipeline.create_dataset(config, "train"), 4)
  np.testing.assert_array_equal(clean_0[0], clean_1[0])
  assert (noisy_0[0] != noisy_1[0]).mean() > 0.3
  np.testing.assert_array_equal(noisy_all[2], noisy_1[0])
  np.testing.assert_array_equal(clean_all[2], clean_0[0])


def test_training_data_is_reproducible_per_epoch(config, mock_mnist):
  # What makes resuming at epoch k reproduce the uninterrupted run.
  config.train.num_epochs = 3
  with mock_mnist(128):
    first = _batches(pipeline.create_dataset(config, "train", start_epoch=2))
    again = _batches(pipeline.create_dataset(config, "train", start_epoch=2))
    config.seed += 1
    other_seed = _batches(pipeline.create_dataset(config, "train", start_epoch=2))
  for a, b in zip(first[0] + first[1], again[0] + again[1], strict=True):
    np.testing.assert_array_equal(a, b)
  assert (first[0][0] != other_seed[0][0]).mean() > 0.3


def test_training_order_is_reshuffled_every_epoch(config, mock_mnist):
  config.train.num_epochs = 2
  with mock_mnist(128):
    _, clean = _batches(pipeline.create_dataset(config, "train"))
  epoch_0, epoch_1 = np.concatenate(clean[:2]), np.concatenate(clean[2:])
  # Same images (sorted by content), different order.
  sort = lambda images: images[np.lexsort(images.reshape(len(images), -1).T)]
  np.testing.assert_array_equal(sort(epoch_0), sort(epoch_1))
  assert not np.array_equal(epoch_0, epoch_1)


def test_eval_noise_is_identical_between_runs_and_batch_sizes(config, mock_mnist):
  with mock_mnist(100):
    first, _ = _batches(pipeline.create_dataset(config, "eval"))
    again, _ = _batches(pipeline.create_dataset(config, "eval"))
    config.train.eval_batch_size = 30
    rebatched, _ = _batches(pipeline.create_dataset(config, "eval"))
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(rebatched))


def test_eval_noise_is_fixed_across_epochs_of_one_dataset(config, mock_mnist):
  with mock_mnist(100):
    dataset = pipeline.create_dataset(config, "eval")
    first, _ = _batches(dataset)
    second, _ = _batches(dataset)
  np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


def test_first_eval_examples_match_the_eval_dataset(config, mock_mnist):
  with mock_mnist(100):
    noisy, clean = pipeline.first_eval_examples(config, 10)
    eval_noisy, eval_clean = _batches(pipeline.create_dataset(config, "eval"), 1)
  np.testing.assert_array_equal(noisy.numpy(), eval_noisy[0][:10])
  np.testing.assert_array_equal(clean.numpy(), eval_clean[0][:10])


def test_input_pipelines_read_disjoint_shards(config, mock_mnist):
  """Two workers: element-wise shards, per-replica batches, same number of batches."""
  contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                         num_replicas_in_sync=2) for i in range(2)]
  config.train.shuffle_buffer_size = 1
  with mock_mnist(256):
    shards = [_batches(pipeline.create_dataset(config, "train", context))[1]
              for context in contexts]
    eval_shards = [_batches(pipeline.create_dataset(config, "eval", context))[1]
                   for context in contexts]
  assert len(shards[0]) == len(shards[1]) == 4  # 128 images each, per-replica batch 32.
  assert shards[0][0].shape == (32, 28, 28, 1)
  flat = [np.concatenate(shard).reshape(128, -1) for shard in shards]
  shared = {row.tobytes() for row in flat[0]} & {row.tobytes() for row in flat[1]}
  assert not shared
  assert sum(len(np.concatenate(shard)) for shard in eval_shards) == 256


def test_steps_per_epoch():
  assert pipeline.steps_per_epoch(60_000, 128) == 468
  assert pipeline.steps_per_epoch(60_000, 128, num_input_pipelines=2) == 468
  # 4 pipelines read 250 images each, in batches of 3.
  assert pipeline.steps_per_epoch(1_001, 12, num_input_pipelines=4) == 83


def test_unknown_split_is_rejected(config):
  with pytest.raises(ValueError, match="valid splits are train, eval"):
    pipeline.create_dataset(config, "test")
