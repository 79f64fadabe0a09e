"""Serving export: the signatures enforce the input contract without crashing the process,
serve any batch size (0 included) in bounded memory, the uint8 signature scales like training,
and the export replaces `saved_model/` atomically."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from configs import test as test_config
from input_pipeline import pipeline
from trainer import checkpoints
from trainer import export
from trainer import models
from tests.helpers import REPO_ROOT

IMAGE_SHAPE = (28, 28, 1)
EXPECTED_FLOAT = r"expects `images` float32 \[N, 28, 28, 1\] with values in \[0, 1\]"
# The module's exports slice requests this finely, so that every test's batch
# of 3 images already spans two slices.
SMALL_CHUNK_SIZE = 2


def _create_model(model_type, seed=0):
  config = test_config.get_config()
  config.model.type = model_type
  return models.create_model(config.model, IMAGE_SHAPE, seed)


def _images(count=3, seed=7):
  return tf.random.stateless_uniform((count, *IMAGE_SHAPE), seed=[seed, 1]).numpy()


@pytest.fixture(scope="module", params=["dense", "conv"])
def exported(request, tmp_path_factory):
  """(model, path of its export, the loaded SavedModel), per model type."""
  model = _create_model(request.param)
  path = str(tmp_path_factory.mktemp(request.param) / "saved_model")
  export.export_saved_model(model, path, chunk_size=SMALL_CHUNK_SIZE)
  return model, path, tf.saved_model.load(path)


def _assert_good_call_works(loaded, model):
  images = _images()
  denoised = loaded.signatures["serving_default"](images=tf.constant(images))["denoised"]
  np.testing.assert_allclose(denoised.numpy(), model(images, training=False).numpy(), atol=1e-6)


@pytest.mark.parametrize("images, received", [
    (np.zeros((2, 28, 28), np.float32), r"got shape\] \[2 28 28\]"),
    (np.zeros((2, 784), np.float32), r"got shape\] \[2 784\]"),
    (np.zeros((2, 32, 32, 1), np.float32), r"got shape\] \[2 32 32 1\]"),
    (np.full((2, 28, 28, 1), 255.0, np.float32), r"got values from\] \[255\] \[to\] \[255\]"),
    (np.full((2, 28, 28, 1), np.nan, np.float32), r"got values from\] \[nan\]"),
    # TF converts numpy arrays to the signature's float32: pixels 0..255 are
    # caught by the range check.
    (np.arange(2 * 28 * 28, dtype=np.uint8).reshape((2, 28, 28, 1)),
     r"got values from\] \[0\] \[to\] \[255\]"),
], ids=["rank3", "flat784", "32x32", "0..255", "nan", "numpy_uint8"])
def test_bad_float_input_fails_clearly_and_serving_survives(exported, images, received):
  model, _, loaded = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"serving_default {EXPECTED_FLOAT}; {received}"):
    loaded.signatures["serving_default"](images=images)
  _assert_good_call_works(loaded, model)


@pytest.mark.parametrize("dtype, received", [(tf.uint8, "uint8"), (tf.float64, "double")])
def test_tensor_of_wrong_dtype_fails_clearly_and_serving_survives(exported, dtype, received):
  model, _, loaded = exported
  images = tf.cast(_images() * 255 if dtype == tf.uint8 else _images(), dtype)
  # TF itself rejects a tensor whose dtype differs from the signature's, before any op runs.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"expected to be a float tensor but is a {received} tensor"):
    loaded.signatures["serving_default"](images=images)
  _assert_good_call_works(loaded, model)


def test_numpy_float64_in_range_is_converted_like_float32(exported):
  model, _, loaded = exported
  # Not an error: TF converts a numpy array to the signature's dtype before the
  # graph runs, and values in [0, 1] survive the conversion.
  denoised = loaded.signatures["serving_default"](images=_images().astype(np.float64))
  np.testing.assert_allclose(denoised["denoised"].numpy(),
                             model(_images(), training=False).numpy(), atol=1e-6)


def test_encode_and_uint8_signatures_check_their_input_too(exported):
  model, _, loaded = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf"encode {EXPECTED_FLOAT}; got shape\] \[2 784\]"):
    loaded.signatures["encode"](images=np.zeros((2, 784), np.float32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"serving_uint8 expects `images` uint8 \[N, 28, 28, 1\]; "
                           r"got shape\] \[2 28 28\]"):
    loaded.signatures["serving_uint8"](images=np.zeros((2, 28, 28), np.uint8))
  _assert_good_call_works(loaded, model)
  latent = loaded.signatures["encode"](images=_images())["latent"]
  np.testing.assert_allclose(latent.numpy(), models.get_encoder(model)(_images()).numpy(),
                             atol=1e-5)


def test_uint8_signature_scales_like_training(exported):
  _, _, loaded = exported
  pixels = tf.random.stateless_uniform((4, *IMAGE_SHAPE), seed=[3, 4], maxval=256,
                                       dtype=tf.int32)
  pixels = tf.cast(pixels, tf.uint8)
  from_uint8 = loaded.signatures["serving_uint8"](images=pixels)["denoised"]
  from_float = loaded.signatures["serving_default"](
      images=pixels.numpy().astype(np.float32) / 255.0)["denoised"]
  np.testing.assert_allclose(from_uint8.numpy(), from_float.numpy(), atol=1e-6)
  # And the scaled input is the training pipeline's clean image.
  config = test_config.get_config()
  _, clean = pipeline.preprocess(pixels, config.noise, tf.constant([0, 0], tf.int64))
  training_denoised = loaded.signatures["serving_default"](images=clean)["denoised"]
  np.testing.assert_allclose(from_uint8.numpy(), training_denoised.numpy(), atol=1e-6)


def test_a_batch_of_many_slices_gives_the_unsliced_model_call(exported):
  model, _, loaded = exported
  # 25 slices of 2 images and a last one of 1.
  images = _images(count=51, seed=11)
  np.testing.assert_allclose(
      loaded.signatures["serving_default"](images=images)["denoised"].numpy(),
      model(images, training=False).numpy(), atol=1e-6)
  np.testing.assert_allclose(loaded.signatures["encode"](images=images)["latent"].numpy(),
                             models.get_encoder(model)(images, training=False).numpy(), atol=1e-5)
  pixels = np.round(images * 255).astype(np.uint8)
  np.testing.assert_allclose(
      loaded.signatures["serving_uint8"](images=pixels)["denoised"].numpy(),
      model(pipeline.scale_images(pixels), training=False).numpy(), atol=1e-6)


def _assert_empty_batch_gives_empty_results(loaded, model):
  empty = np.zeros((0, *IMAGE_SHAPE), np.float32)
  latent_dim = models.get_encoder(model).output_shape[-1]
  assert loaded.signatures["serving_default"](images=empty)["denoised"].shape == (0, *IMAGE_SHAPE)
  assert loaded.signatures["encode"](images=empty)["latent"].shape == (0, latent_dim)
  assert loaded.signatures["serving_uint8"](
      images=empty.astype(np.uint8))["denoised"].shape == (0, *IMAGE_SHAPE)


def test_an_empty_batch_gives_empty_results(exported):
  model, _, loaded = exported
  _assert_empty_batch_gives_empty_results(loaded, model)
  _assert_good_call_works(loaded, model)


def test_an_empty_batch_gives_empty_results_from_a_unet(tmp_path):
  # Unsliced, conv layers reject an empty batch: "input depth must be evenly
  # divisible by filter depth: 1 vs 32".
  model = _create_model("unet")
  path = str(tmp_path / "saved_model")
  export.export_saved_model(model, path)
  loaded = tf.saved_model.load(path)
  _assert_empty_batch_gives_empty_results(loaded, model)
  _assert_good_call_works(loaded, model)


_PEAK_MEMORY_GROWTH_CODE = """
    import sys
    import numpy as np
    import tensorflow as tf
    from trainer import resources
    path, count = sys.argv[1], int(sys.argv[2])
    serve = tf.saved_model.load(path).signatures["serving_default"]
    serve(images=np.zeros((8, 28, 28, 1), np.float32))  # Traces and warms up.
    images = np.random.default_rng(0).random((count, 28, 28, 1), dtype=np.float32)
    before = resources.peak_rss_mb()
    denoised = serve(images=images)["denoised"].numpy()
    # The last, partial slice, against the model on those images alone.
    last = len(images) - (len(images) % 256 or 256)
    expected = serve(images=images[last:])["denoised"].numpy()
    print(resources.peak_rss_mb() - before, np.abs(denoised[last:] - expected).max())
"""


def _peak_memory_growth_mb(path, count):
  """(peak RSS growth in MiB of one serving_default call on `count` images, its error on the
  last slice), measured in a fresh process: in this one an earlier test's peak hides it."""
  result = subprocess.run(
      [sys.executable, "-c", textwrap.dedent(_PEAK_MEMORY_GROWTH_CODE), path, str(count)],
      check=False, cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
  growth, error = (float(value) for value in result.stdout.split())
  return growth, error


@pytest.fixture(scope="module")
def conv_saved_model(tmp_path_factory):
  """A conv model exported with the default slice size."""
  path = str(tmp_path_factory.mktemp("conv_default") / "saved_model")
  export.export_saved_model(_create_model("conv"), path)
  return path


def _functions_called_by(name, functions):
  """`name` and every function of the library it calls, transitively."""
  reached, pending = set(), [name]
  while pending:
    current = pending.pop()
    if current in reached or current not in functions:
      continue
    reached.add(current)
    pending += [value.func.name for node in functions[current].node_def
                for value in node.attr.values() if value.func.name]
  return reached


@pytest.mark.parametrize("endpoint", ["serving_default", "encode", "serving_uint8"])
def test_the_model_runs_only_inside_a_sequential_loop_over_slices(conv_saved_model, endpoint):
  """The cheap check behind the slow memory test: every convolution of the signature is in
  the body of a while loop that runs one slice at a time (parallel_iterations=1; with TF's
  default of 10 the runtime may keep ten slices' activations alive)."""
  graph = tf.saved_model.load(conv_saved_model).signatures[endpoint].graph.as_graph_def()
  functions = {function.signature.name: function for function in graph.library.function}
  loops = [node for function in functions.values() for node in function.node_def
           if node.op in ("While", "StatelessWhile")]
  assert [loop.attr["parallel_iterations"].i for loop in loops] == [1]
  in_loop = _functions_called_by(loops[0].attr["body"].func.name, functions)
  convolutions = {name for name, function in functions.items()
                  if any(node.op == "Conv2D" for node in function.node_def)}
  assert convolutions and convolutions <= in_loop, (convolutions, in_loop)


@pytest.mark.slow
def test_a_request_of_20000_images_stays_in_bounded_memory(conv_saved_model):
  # The request that killed the process in a 3 GB container (unsliced it needs
  # about 4 GiB); sliced, about 270 MiB, mostly the request's own copies
  # (3 KiB per image each).
  growth, error = _peak_memory_growth_mb(conv_saved_model, 20_000)
  assert growth < 600, f"serving 20,000 images grew the peak RSS by {growth:.0f} MiB"
  assert error < 1e-6


@pytest.mark.slow  # A serving process: CI runs it in make test-slow.
def test_conv_bad_shape_does_not_abort_the_process(tmp_path):
  """Before the checks, a rank-3 batch aborted a conv model's process (oneDNN check, exit 134),
  through `signatures[...]` and through a plain Session::Run feed as TF Serving does it."""
  path = str(tmp_path / "saved_model")
  export.export_saved_model(_create_model("conv"), path)
  code = f"""
      import numpy as np
      import tensorflow as tf
      bad = np.zeros((2, 28, 28), np.float32)
      good = np.zeros((1, 28, 28, 1), np.float32)
      loaded = tf.saved_model.load({path!r})
      try:
        loaded.signatures["serving_default"](images=bad)
      except tf.errors.InvalidArgumentError as error:
        print("signature:", error.message.splitlines()[0])
      print("good:", loaded.signatures["serving_default"](images=good)["denoised"].shape)
      with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as session:
        signature = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], {path!r}).signature_def["serving_default"]
        images = session.graph.get_tensor_by_name(signature.inputs["images"].name)
        denoised = session.graph.get_tensor_by_name(signature.outputs["denoised"].name)
        # Below session.run's Python-side feed checks: TF Serving feeds any shape.
        run = lambda x: session._do_run(None, [], [denoised], {{images.ref(): x}}, None, None)
        try:
          run(bad)
        except tf.errors.InvalidArgumentError as error:
          print("session:", [line for line in error.message.splitlines() if "assert" in line][0])
        print("good:", run(good)[0].shape)
  """
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
  lines = result.stdout.splitlines()
  assert len(lines) == 4, result.stdout
  for line in lines[0], lines[2]:
    assert ("serving_default expects `images` float32 [N, 28, 28, 1] with values in [0, 1]"
            "; got shape] [2 28 28]") in line, line
  assert lines[1] == lines[3] == "good: (1, 28, 28, 1)", lines


def _temporaries(path):
  return tf.io.gfile.glob(path + ".tmp-*")


def test_failed_export_keeps_the_previous_saved_model(tmp_path, monkeypatch):
  path = str(tmp_path / "saved_model")
  old_model = _create_model("dense", seed=0)
  export.export_saved_model(old_model, path, training_run={"step": 32})
  old_files = sorted(tf.io.gfile.listdir(path))

  real_save = tf.saved_model.save

  def save_then_fail_before_the_graph(obj, export_dir, *args, **kwargs):
    # What a kill mid-write leaves: variables written, no saved_model.pb yet.
    real_save(obj, export_dir, *args, **kwargs)
    tf.io.gfile.remove(os.path.join(export_dir, "saved_model.pb"))
    raise OSError("disk full")

  # Keras's ExportArchive.write_out writes through tf.saved_model.save.
  monkeypatch.setattr(tf.saved_model, "save", save_then_fail_before_the_graph)
  with pytest.raises(OSError, match="disk full"):
    export.export_saved_model(_create_model("dense", seed=1), path)
  assert sorted(tf.io.gfile.listdir(path)) == old_files
  assert "saved_model.pb" in old_files
  _assert_good_call_works(tf.saved_model.load(path), old_model)
  # The record of what is exported stays with the export it describes.
  assert export.read_export_info(path) == {
      "weights_fingerprint": checkpoints.weights_fingerprint(old_model),
      "training_run": {"step": 32}}
  assert not _temporaries(path)


def test_export_replaces_the_previous_one_and_cleans_stale_temporaries(tmp_path):
  path = str(tmp_path / "saved_model")
  export.export_saved_model(_create_model("dense", seed=0), path)
  # What a kill during an earlier export leaves behind.
  stale = path + ".tmp-12345"
  tf.io.gfile.makedirs(os.path.join(stale, "variables"))
  new_model = _create_model("dense", seed=1)
  export.export_saved_model(new_model, path)
  assert not _temporaries(path)
  assert sorted(os.listdir(tmp_path)) == ["saved_model"]
  loaded = tf.saved_model.load(path)
  _assert_good_call_works(loaded, new_model)
  # The record describes the new weights; a loaded export's variables give its fingerprint.
  assert export.read_export_info(path) == {
      "weights_fingerprint": checkpoints.weights_fingerprint(new_model), "training_run": None}
  assert (checkpoints.arrays_fingerprint(variable.numpy() for variable in loaded.variables)
          == checkpoints.weights_fingerprint(new_model))
