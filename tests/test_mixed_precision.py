"""Mixed precision (runtime.dtype_policy): layer dtypes, loss scaling, training and export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import test as test_config
from configs import unet as unet_config
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import errors
from trainer import models
from trainer import optimizers
from trainer import steps as steps_lib
from trainer import train
from trainer import validation

_COMPUTE_DTYPES = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


@pytest.mark.parametrize("policy", sorted(_COMPUTE_DTYPES))
@pytest.mark.parametrize("model_config", [test_config.get_config().model,
                                          unet_config.get_config().model],
                         ids=["dense", "unet"])
def test_layers_compute_in_half_precision_with_float32_weights_and_output(policy, model_config):
  model = models.create_model(model_config, (28, 28, 1), dtype_policy=policy)
  assert keras.config.dtype_policy().name == "float32"  # The global default is restored.
  assert {weight.dtype for weight in model.weights} == {"float32"}
  compute_dtypes = {layer.compute_dtype for layer in model._flatten_layers()  # pylint: disable=protected-access
                    if layer.weights}
  assert _COMPUTE_DTYPES[policy] in compute_dtypes
  output = model(tf.zeros((2, 28, 28, 1)))
  assert output.dtype == tf.float32
  # Same seed, same weights as the float32 model: weights move between policies.
  float32_model = models.create_model(model_config, (28, 28, 1))
  for mixed, plain in zip(model.get_weights(), float32_model.get_weights(), strict=True):
    np.testing.assert_array_equal(mixed, plain)


def test_only_float16_gets_loss_scaling():
  config = test_config.get_config().train
  assert isinstance(optimizers.create_optimizer(config, 10, "mixed_float16"),
                    keras.optimizers.LossScaleOptimizer)
  for policy in ("float32", "mixed_bfloat16"):
    optimizer = optimizers.create_optimizer(config, 10, policy)
    assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("policy, jit_compile", [
    ("mixed_bfloat16", False), pytest.param("mixed_bfloat16", True, marks=pytest.mark.slow),
    pytest.param("mixed_float16", False, marks=pytest.mark.slow),
    # Loss scaling's skipped steps and scale updates inside the one-XLA-call loop.
    pytest.param("mixed_float16", True, marks=pytest.mark.slow)])
def test_mixed_precision_training_loss_drops(policy, jit_compile):
  config = test_config.get_config()
  config.runtime.dtype_policy = policy
  config.runtime.jit_compile = jit_compile
  data = data_source.create_data_source(config)
  model = models.create_model(config.model, data.image_shape, config.seed, policy)
  optimizer = optimizers.create_optimizer(config.train, train.total_steps(config, data), policy)
  train_steps = steps_lib.make_train_function(tf.distribute.get_strategy(), model, optimizer,
                                              config)
  iterator = iter(pipeline.create_dataset(data, config, "train"))
  losses = [float(train_steps(iterator, tf.constant(8), tf.constant(0.0))["loss"])
            for _ in range(3)]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0] * 0.8, losses


@pytest.mark.slow
def test_mixed_bfloat16_run_exports_a_float32_model(tmp_path):
  config = test_config.get_config()
  config.runtime.dtype_policy = "mixed_bfloat16"
  train.train_and_evaluate(config, str(tmp_path))
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert np.isfinite(metrics["psnr"]) and metrics["psnr"] > metrics["noisy_psnr"]
  loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
  denoised = loaded.signatures["serving_default"](images=tf.zeros((3, 28, 28, 1)))["denoised"]
  assert denoised.dtype == tf.float32 and denoised.shape == (3, 28, 28, 1)


def test_dtype_policy_is_validated_and_fixed_for_a_workdir():
  config = test_config.get_config()
  config.runtime.dtype_policy = "float64"
  with pytest.raises(errors.ConfigError, match="'float64'; valid policies are float32, "
                                                   "mixed_bfloat16, mixed_float16"):
    validation.validate_config(config)
  config.runtime.dtype_policy = "float32"
  earlier = json.loads(json.dumps(config.to_dict()))
  config.runtime.dtype_policy = "mixed_float16"
  with pytest.raises(errors.ConfigError, match="runtime.dtype_policy='float32' -> "
                                                   "'mixed_float16'; its checkpoints cannot"):
    validation.check_resumable(config, earlier, allow_changes=True)
