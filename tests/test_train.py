"""Training: the step learns, NaNs stop the run, Mirrored equals one device, and a real
1-epoch run on the bundled MNIST writes every artifact, resumes and exports faithfully."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from configs import blind_unet_mixture as blind_unet_mixture_config
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import checkpoints
from trainer import export
from trainer import models
from trainer import optimizers
from trainer import steps as steps_lib
from trainer import train
from trainer import run_files
from tests.helpers import REPO_ROOT



def _run_python(code, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _train_briefly(config, num_chunks, steps_per_chunk=4):
  """Trains on one device; returns (model, data, per-chunk losses)."""
  strategy = tf.distribute.get_strategy()
  data = data_source.create_data_source(config)
  model = models.create_model(config.model, data.image_shape, config.seed)
  optimizer = optimizers.create_optimizer(config.train, train.total_steps(config, data))
  train_steps = steps_lib.make_train_function(strategy, model, optimizer, config)
  iterator = iter(pipeline.create_dataset(data, config, "train"))
  losses = [float(train_steps(iterator, tf.constant(steps_per_chunk), tf.constant(0.0))["loss"])
            for _ in range(num_chunks)]
  return model, data, losses


def _evaluate(model, data, config):
  evaluate = steps_lib.make_eval_function(tf.distribute.get_strategy(), model, config)
  dataset = pipeline.create_dataset(data, config, "eval")
  return {name: float(value) for name, value in
          evaluate(iter(dataset), tf.constant(data.num_eval_steps)).items()}


def test_loss_drops_over_a_few_steps(config):
  _, _, losses = _train_briefly(config, num_chunks=8)
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses


def test_xla_steps_match_plain_steps(config):
  """runtime.jit_compile changes how the steps run, not what they compute."""
  plain_model, data, plain_losses = _train_briefly(config, num_chunks=3)
  config.runtime.jit_compile = True
  xla_model, _, xla_losses = _train_briefly(config, num_chunks=3)
  np.testing.assert_allclose(xla_losses, plain_losses, rtol=1e-5, atol=1e-5)
  # The models differ by XLA's float rounding over 12 steps.
  xla_metrics = _evaluate(xla_model, data, config)
  plain_metrics = _evaluate(plain_model, data, config)
  for name in steps_lib.EVAL_METRICS:
    assert xla_metrics[name] == pytest.approx(plain_metrics[name], rel=1e-5, abs=1e-5), name


@pytest.mark.slow  # Several runs: CI runs it in make test-slow.
def test_compiled_loop_weights_do_not_depend_on_the_chunking(config):
  """On one device with XLA a chunk of steps is one XLA call: resuming (or stopping) at any
  chunk boundary must give the weights of an unbroken run, bit for bit."""
  config.runtime.jit_compile = True
  data = data_source.create_data_source(config)

  def run(chunks):
    model = models.create_model(config.model, data.image_shape, config.seed)
    optimizer = optimizers.create_optimizer(config.train, train.total_steps(config, data))
    train_steps = steps_lib.make_train_function(tf.distribute.get_strategy(), model, optimizer,
                                            config)
    iterator = iter(pipeline.create_dataset(data, config, "train"))
    stops = [float(train_steps(iterator, tf.constant(size), tf.constant(float(index)))["stop"])
             for index, size in enumerate(chunks)]
    return model.get_weights(), stops, int(optimizer.iterations)

  whole_weights, _, whole_iterations = run([8])
  split_weights, stops, split_iterations = run([3, 5])
  assert whole_iterations == split_iterations == 8
  assert stops == [0.0, 1.0]  # The stop request comes back unchanged.
  for whole, split in zip(whole_weights, split_weights, strict=True):
    np.testing.assert_array_equal(whole, split)


def test_padded_evaluation_equals_unpadded(config):
  """300 test images in batches of 128: the padded last batch changes no metric."""
  config.eval_split = "test[:300]"
  data = data_source.create_data_source(config)
  model = models.create_model(config.model, data.image_shape, config.seed)
  padded = _evaluate(model, data, config)
  noisy, clean = pipeline.first_eval_examples(data, config, 300)
  unpadded = steps_lib.eval_step(model, (noisy, clean, tf.ones([300])), config.train.loss)
  assert float(unpadded["count"]) == 300
  for name in steps_lib.EVAL_METRICS:
    assert np.isfinite(padded[name]), name
    assert padded[name] == pytest.approx(float(unpadded[name]) / 300, rel=1e-6, abs=1e-6), name


def test_nan_loss_raises_with_the_step_range():
  chunk_losses = iter([0.5, float("nan")])

  def fake_train_steps(iterator, num_steps, stop_requested):
    del iterator, num_steps, stop_requested
    return {"loss": tf.constant(next(chunk_losses)), "psnr": tf.constant(10.0),
            "stop": tf.constant(0.0)}

  assert steps_lib.run_chunk(fake_train_steps, None, first_step=100, num_steps=8, epoch=2,
                             stop_requested=False)["loss"] == 0.5
  with pytest.raises(FloatingPointError, match="became nan between steps 108 and 115 "
                                               r"\(epoch 3\)"):
    steps_lib.run_chunk(fake_train_steps, None, first_step=108, num_steps=8, epoch=2,
                        stop_requested=False)


def test_a_chunk_passes_the_stop_request_in_and_returns_the_answer():
  calls = []

  def fake_train_steps(iterator, num_steps, stop_requested):
    del iterator
    calls.append((int(num_steps), float(stop_requested)))
    return {"loss": tf.constant(0.5), "psnr": tf.constant(10.0), "stop": stop_requested}

  chunk = steps_lib.run_chunk(fake_train_steps, None, first_step=0, num_steps=8, epoch=0,
                              stop_requested=True)
  assert calls == [(8, 1.0)] and chunk == {"loss": 0.5, "psnr": 10.0, "stop": 1.0}
  chunk = steps_lib.run_chunk(fake_train_steps, None, first_step=8, num_steps=4, epoch=0,
                              stop_requested=False)
  assert calls[-1] == (4, 0.0) and chunk["stop"] == 0.0


def test_mirrored_two_replicas_match_one_device():
  """Same global batch, same initial weights: per-replica losses and gradients combine exactly."""
  output = _run_python("""
      import json
      import numpy as np
      import tensorflow as tf
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from configs import test
      from trainer import models, optimizers
      from trainer import steps as steps_lib

      config = test.get_config()
      images = tf.random.stateless_uniform((64, 28, 28, 1), seed=[1, 2])
      batch = (tf.clip_by_value(images + 0.2, 0.0, 1.0), images)

      def run(strategy):
        with strategy.scope():
          model = models.create_model(config.model, (28, 28, 1), seed=0)
          optimizer = optimizers.create_optimizer(config.train, num_train_steps=3)
          optimizer.build(model.trainable_variables)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(batch).repeat(3))
        steps = steps_lib.make_train_function(strategy, model, optimizer, config)
        loss = float(steps(iter(dataset), tf.constant(3), tf.constant(0.0))["loss"])
        return loss, model.get_weights(), strategy.num_replicas_in_sync

      one_loss, one_weights, one_replicas = run(tf.distribute.get_strategy())
      two_loss, two_weights, two_replicas = run(
          tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))
      config.runtime.jit_compile = True  # XLA for the forward and backward pass per replica.
      xla_loss, xla_weights, _ = run(tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]))
      initial = models.create_model(config.model, (28, 28, 1), seed=0).get_weights()
      print(json.dumps({
          "replicas": [one_replicas, two_replicas],
          "losses": [one_loss, two_loss, xla_loss],
          "max_weight_difference": max(float(np.abs(a - b).max())
                                       for a, b in zip(one_weights, two_weights)),
          "max_xla_weight_difference": max(float(np.abs(a - b).max())
                                           for a, b in zip(one_weights, xla_weights)),
          "max_update": max(float(np.abs(a - b).max()) for a, b in zip(one_weights, initial)),
      }))
  """)
  result = json.loads(output.strip().splitlines()[-1])
  assert result["replicas"] == [1, 2]
  assert result["losses"][0] == pytest.approx(result["losses"][1], rel=1e-5)
  assert result["losses"][0] == pytest.approx(result["losses"][2], rel=1e-5)
  assert result["max_xla_weight_difference"] < 1e-5
  assert result["max_update"] > 1e-3  # The weights really moved...
  assert result["max_weight_difference"] < 1e-5  # ...and identically.


@pytest.mark.slow  # Several runs: CI runs it in make test-slow.
def test_mirrored_training_job_end_to_end(tmp_path):
  workdir = tmp_path / "workdir"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
       f"--workdir={workdir}", "--config.runtime.strategy=mirrored",
       "--config.runtime.num_cpu_devices=2", "--config.runtime.devices=CPU:0,CPU:1"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Strategy mirrored with 2 replica(s)" in result.stderr
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert np.isfinite(metrics["loss"]) and metrics["psnr"] > metrics["noisy_psnr"]
  assert (workdir / "saved_model" / "saved_model.pb").exists()


def test_one_epoch_writes_every_artifact(trained_run):
  workdir, config, _ = trained_run
  names = set(os.listdir(workdir))
  assert {"config.json", "checkpoints", "train", "eval", "saved_model", "metrics.json",
          "plots", "history.json"} <= names
  assert any(name.startswith("events.out.tfevents") for name in names)
  for run in ("train", "eval"):
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(
        os.path.join(workdir, run)))
  saved_config = json.load(open(os.path.join(workdir, "config.json")))
  assert saved_config == json.loads(json.dumps(config.to_dict()))
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-32.index"))
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  for name in ("loss", "mse", "psnr", "ssim"):
    assert np.isfinite(metrics[name]), name
  assert 0.0 < metrics["ssim"] <= 1.0
  for plot in ("loss.png", "denoised.png"):
    with open(os.path.join(workdir, "plots", plot), "rb") as file:
      assert file.read(8) == b"\x89PNG\r\n\x1a\n"
  history = json.load(open(os.path.join(workdir, "history.json")))
  assert [entry["epoch"] for entry in history] == [1]
  assert history[0]["eval_loss"] == pytest.approx(metrics["loss"], rel=1e-6)


def test_the_export_records_the_step_and_weights_it_holds(trained_run):
  workdir, config, model = trained_run
  with open(os.path.join(workdir, "metrics.json")) as file:
    metrics = json.load(file)
  assert export.read_export_info(os.path.join(workdir, "saved_model")) == {
      "weights_fingerprint": checkpoints.weights_fingerprint(model),
      "training_run": {
          "step": 32, "epochs": metrics["epochs"], "num_parameters": metrics["num_parameters"],
          "model_type": config.model.type, "noise": json.loads(json.dumps(config.noise.to_dict())),
      }}


def test_one_epoch_on_real_mnist_learns(trained_run):
  workdir, _, _ = trained_run
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  # 32 steps already bring the output closer to the clean images than the
  # noisy input is, and far below the BCE of an untrained model (about 0.69).
  assert metrics["psnr"] > metrics["noisy_psnr"] + 0.3
  assert metrics["loss"] < 0.3


def test_exported_saved_model_matches_the_model_in_a_fresh_process(trained_run, tmp_path):
  workdir, config, model = trained_run
  images = tf.random.stateless_uniform((6, 28, 28, 1), seed=[5, 6]).numpy()
  np.save(tmp_path / "images.npy", images)
  _run_python(f"""
      import numpy as np
      import tensorflow as tf
      loaded = tf.saved_model.load({os.path.join(workdir, "saved_model")!r})
      images = tf.constant(np.load({str(tmp_path / "images.npy")!r}))
      serving = loaded.signatures["serving_default"](images=images)
      encoded = loaded.signatures["encode"](images=images)
      np.save({str(tmp_path / "denoised.npy")!r}, serving["denoised"].numpy())
      np.save({str(tmp_path / "latent.npy")!r}, encoded["latent"].numpy())
  """)
  denoised = np.load(tmp_path / "denoised.npy")
  latent = np.load(tmp_path / "latent.npy")
  assert denoised.shape == (6, 28, 28, 1) and denoised.dtype == np.float32
  assert latent.shape == (6, config.model.latent_dim) and latent.dtype == np.float32
  np.testing.assert_allclose(denoised, model(images, training=False).numpy(), atol=1e-6)
  np.testing.assert_allclose(latent, models.get_encoder(model)(images).numpy(), atol=1e-5)


# Five trainer runs each: CI runs both in make test-slow (tests/test_resume.py
# keeps resuming in make test).
@pytest.mark.parametrize("jit_compile", [
    pytest.param(False, marks=pytest.mark.slow),
    # configs/default.py's path: one XLA call per chunk of steps.
    pytest.param(True, marks=pytest.mark.slow)])
def test_resumed_runs_end_where_an_uninterrupted_run_does(config, tmp_path, jit_compile):
  """Stopped after epoch 1, then mid-epoch 2 (train.max_steps), rerun to the end: same weights."""
  config.train.num_epochs = 2
  config.runtime.jit_compile = jit_compile
  straight_dir, workdir = str(tmp_path / "straight"), str(tmp_path / "resumed")
  straight = train.train_and_evaluate(config, straight_dir)
  for max_steps in (32, 40):  # The end of epoch 1, then 8 of epoch 2's 32 steps.
    config.train.max_steps = max_steps
    train.train_and_evaluate(config, workdir)
    assert os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{max_steps}.index"))
  assert [(entry["epoch"], entry["step"]) for entry in run_files.load_history(workdir)] == [
      (1, 32), (2, 40)]
  config.train.max_steps = 0
  resumed = train.train_and_evaluate(config, workdir)
  history = run_files.load_history(workdir)
  assert [(entry["epoch"], entry["step"]) for entry in history] == [(1, 32), (2, 40), (2, 64)]
  # Seeds depend on the epoch and the batch index, not on iterator state: the
  # resumed run saw the same batches at the same steps.
  for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if jit_compile:  # The same XLA computations, whatever the chunking: bit for bit.
      np.testing.assert_array_equal(a, b)
  straight_history = run_files.load_history(straight_dir)
  for name in ("eval_loss", "eval_psnr"):
    assert history[-1][name] == pytest.approx(straight_history[-1][name], rel=1e-5), name

  # A finished run started again trains nothing and keeps its reports.
  train.train_and_evaluate(config, workdir)
  assert run_files.load_history(workdir) == history
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-96.index"))
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  assert metrics["step"] == 64 and metrics["epochs"] == 2
  assert metrics["loss"] == pytest.approx(history[-1]["eval_loss"], rel=1e-5)


def test_eval_every_epochs_evaluates_less_often_and_always_at_the_end(config, tmp_path):
  config.train.num_epochs = 3
  config.train.eval_every_epochs = 2
  workdir = str(tmp_path / "workdir")
  train.train_and_evaluate(config, workdir)
  assert [entry["step"] for entry in run_files.load_history(workdir)] == [64, 96]
  for step in (32, 64, 96):  # A checkpoint every epoch all the same.
    assert os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{step}.index"))


def test_a_run_ends_at_its_target_psnr_and_a_rerun_trains_no_further(config, tmp_path):
  config.train.num_epochs = 2
  config.train.stop_at_eval_psnr = 5.0  # Reached at the first evaluation (all-gray output: ~6 dB).
  workdir = str(tmp_path / "workdir")
  train.train_and_evaluate(config, workdir)
  history = run_files.load_history(workdir)
  assert [entry["step"] for entry in history] == [32] and history[0]["eval_psnr"] >= 5.0
  assert json.load(open(os.path.join(workdir, "metrics.json")))["step"] == 32
  train.train_and_evaluate(config, workdir)  # The rerun evaluates, finds the target met, stops.
  assert run_files.load_history(workdir) == history
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-64.index"))
  config.train.stop_at_eval_psnr = 60.0  # A higher target (a free change): training goes on.
  train.train_and_evaluate(config, workdir)
  assert [entry["step"] for entry in run_files.load_history(workdir)] == [32, 64]


@pytest.mark.slow  # tests/test_models.py checks the bias-free U-Net itself.
def test_a_tiny_bias_free_blind_unet_on_every_noise_type_trains_and_exports(tmp_path):
  """configs/blind_unet_mixture.py, shrunk: one short epoch on every noise type and level."""
  config = blind_unet_mixture_config.get_config()
  config.train_split, config.eval_split = "train[:2048]", "test[:128]"
  config.train.update(num_epochs=1, batch_size=32, eval_batch_size=128,
                      shuffle_buffer_size=2048, steps_per_loop=8)
  config.model.update(unet_filters=(8, 16, 32), unet_use_bias=False)
  config.runtime.jit_compile = False
  workdir = str(tmp_path / "workdir")
  model = train.train_and_evaluate(config, workdir)
  assert not [weight.path for weight in model.weights if "bias" in weight.path]
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  # The untrained model outputs sigmoid(0) = 0.5 (a BCE of 0.69); 64 steps bring it to
  # about 0.49 (a bias-free model starts slowly: it has no bias to darken the background).
  assert np.isfinite(metrics["loss"]) and metrics["loss"] < 0.6, metrics
  loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
  images = tf.random.stateless_uniform((5, 28, 28, 1), seed=[1, 2])
  denoised = loaded.signatures["serving_default"](images=images)["denoised"]
  np.testing.assert_allclose(denoised.numpy(), model(images, training=False).numpy(), atol=1e-6)
  assert loaded.signatures["encode"](images=images)["latent"].shape == (5, 7 * 7 * 32)
  assert export.read_export_info(os.path.join(workdir, "saved_model"))["training_run"][
      "noise"]["mixture_types"] == ["gaussian", "salt_and_pepper", "masking"]
