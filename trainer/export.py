"""SavedModel export for serving: signatures that enforce their input contract, written atomically.

Signatures (names and outputs fixed: serving clients rely on them):
- `serving_default`: `images` float32 [N, 28, 28, 1] in [0, 1]
  -> {"denoised": float32 [N, 28, 28, 1]}
- `encode`: `images` float32 [N, 28, 28, 1] in [0, 1] -> {"latent": float32 [N, latent_dim]}
- `serving_uint8`: `images` uint8 [N, 28, 28, 1] (raw pixels, 0..255)
  -> {"denoised": float32 [N, 28, 28, 1]}, scaled exactly as in training.

Every signature checks its input's rank and shape (and, for float input, that
the values lie in [0, 1]) before the model runs, so a bad request fails with an
`InvalidArgumentError` naming the expected and the received input, instead of
aborting the serving process (a conv model fed [N, 28, 28] hits a oneDNN check
failure) or silently returning garbage (a dense model accepts [N, 784]; pixels
in 0..255 saturate the first layer).

The model then runs on slices of at most `SERVING_CHUNK_SIZE` images, one after
the other, so a request's memory is bounded by one slice's activations whatever
its N (unsliced, a conv model needs about 0.2 MiB per image, a U-Net 0.6 MiB:
20,000 images in one request exhausted a 3 GB container). N = 0 returns an
empty result of the right shape without running the model (whose conv layers
reject an empty batch with a misleading "input depth must be evenly divisible
by filter depth").

The export also records what it was exported from, in `assets.extra/export.json`
inside the SavedModel (`assets.extra/` is the SavedModel's place for files kept
with a model that its graph never loads): the weights' fingerprint and, from
trainer.main, the training run's step. It is written before the export is
renamed into place, so it always describes the weights next to it; the
evaluation reports it, not the workdir's state at that time.
"""

import os

from absl import logging
import keras
import tensorflow as tf

from input_pipeline import pipeline
from trainer import checkpoints
from trainer import errors
from trainer import models
from trainer import fileio
from trainer import safe_files

SERVING_ENDPOINT = "serving_default"
ENCODE_ENDPOINT = "encode"
UINT8_ENDPOINT = "serving_uint8"
# `export_saved_model(model, path)` writes `path + _TEMPORARY_INFIX + pid` first.
_TEMPORARY_INFIX = ".tmp-"
# Images per model call inside a signature. Peak memory per slice: about 50 MiB
# for the conv model, 150 MiB for the U-Net (0.2 and 0.6 MiB per image); a
# request of 256 images or fewer is one call, as without slicing.
SERVING_CHUNK_SIZE = 256
# What an export was exported from, relative to the SavedModel's directory.
EXPORT_INFO_PATH = os.path.join("assets.extra", "export.json")

def _expected_input(endpoint: str, dtype: tf.DType, image_shape) -> str:
  dims = ", ".join(str(dim) for dim in image_shape)
  values = " with values in [0, 1]" if dtype.is_floating else ""
  # No quotes: tf.Assert would print them escaped.
  return f"Signature {endpoint} expects `images` {dtype.name} [N, {dims}]{values}"


def _checked_images(images: tf.Tensor, endpoint: str, image_shape) -> tf.Tensor:
  """Returns `images`, with its static shape set, once runtime checks of the contract pass.

  The signatures declare `images` with an unknown shape on purpose. With a
  declared [None, 28, 28, 1], rank checks are decided at trace time
  (`tf.debugging.assert_rank` becomes a no-op, `tf.size(tf.shape(images))` the
  constant 4), yet neither `loaded.signatures[...]` nor a Session::Run feed
  (TF Serving) stops a [N, 28, 28] tensor at run time: it reached the conv
  layers and aborted the process. With an unknown shape every check below is
  an op that runs on the tensor actually received.
  """
  expected = _expected_input(endpoint, images.dtype, image_shape)
  shape = tf.shape(images)
  expected_rank = 1 + len(image_shape)
  # Comparing shapes of different lengths would itself fail with an unrelated
  # broadcasting error, so the dimensions are compared only at the right rank.
  shape_ok = tf.cond(
      tf.equal(tf.size(shape), expected_rank),
      lambda: tf.reduce_all(tf.equal(shape[1:], image_shape)),
      lambda: tf.constant(False))
  checks = [tf.debugging.Assert(shape_ok, [f"{expected}; got shape", shape],
                                summarize=expected_rank + 2)]
  if images.dtype.is_floating:
    with tf.control_dependencies(checks):  # A bad shape is reported before bad values.
      # Written so that NaN, which fails every comparison, is out of range too.
      in_range = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))
      checks.append(tf.debugging.Assert(
          in_range, [f"{expected}; got values from", tf.reduce_min(images), "to",
                     tf.reduce_max(images), "(scale 0..255 pixels by 1/255, or call "
                     f"{UINT8_ENDPOINT} with uint8 images)"]))
  with tf.control_dependencies(checks):
    # The model's layers need the static shape; the asserts above ran first.
    return tf.ensure_shape(tf.identity(images), [None, *image_shape])


def _in_chunks(function, images: tf.Tensor, chunk_size: int, output_shape) -> tf.Tensor:
  """`function` (a model call) on consecutive slices of `chunk_size` images, concatenated.

  A `tf.while_loop` with `parallel_iterations=1`: one slice's activations are
  alive at a time (with the default of 10, the runtime may run ten slices at
  once). The loop runs no iteration for an empty batch, and the result is then
  [0, *output_shape].
  """
  count = tf.shape(images)[0]
  num_chunks = (count + chunk_size - 1) // chunk_size
  outputs = tf.TensorArray(tf.float32, size=num_chunks, infer_shape=False,
                           element_shape=tf.TensorShape([None, *output_shape]))

  def body(index, outputs):
    start = index * chunk_size
    return index + 1, outputs.write(index, function(images[start:start + chunk_size]))

  _, outputs = tf.while_loop(lambda index, _: index < num_chunks, body,
                             [tf.constant(0), outputs], parallel_iterations=1)
  return tf.ensure_shape(outputs.concat(), [None, *output_shape])


def _remove_temporaries(path: str) -> None:
  """Removes `path`'s temporary siblings left by an export that was killed."""
  for stale in tf.io.gfile.glob(path + _TEMPORARY_INFIX + "*"):
    logging.info("Removing %s, left by an interrupted export.", stale)
    safe_files.remove_tree(stale)


def read_export_info(path: str) -> dict | None:
  """{"weights_fingerprint", "training_run"} recorded in the SavedModel at `path`; None if it
  records none (exported before the record existed, or by other code).

  Raises:
    errors.CorruptFileError: the record is unreadable.
  """
  info_path = os.path.join(path.rstrip("/"), EXPORT_INFO_PATH)
  if not tf.io.gfile.exists(info_path):
    return None
  info = fileio.read_json(info_path)
  if not isinstance(info, dict):
    raise errors.CorruptFileError(f"{info_path} is not a JSON object; export the model again.")
  return info


def export_saved_model(model: keras.Model, path: str, training_run: dict | None = None,
                       chunk_size: int = SERVING_CHUNK_SIZE) -> None:
  """Writes `model` (built by `models.create_model`) as a SavedModel at `path`, atomically.

  The signatures take images of the shape the model was built for. The model
  is written to a temporary sibling of `path`, then renamed into place, so
  `path` either holds the previous complete export or the new complete one,
  never a partial one (a kill between the two renames that replace an older
  export leaves no `path`, and complete temporaries that the next export
  removes). On a local disk each rename is atomic; on GCS (`gs://`) renaming a
  directory copies then deletes each object, so a kill there can still leave
  an incomplete `path`.

  Each signature runs the model on at most `chunk_size` images at a time (see
  `_in_chunks`). `training_run` (JSON-serialisable: the step and what trained
  the model) is recorded with the weights' fingerprint in `EXPORT_INFO_PATH`.
  """
  path = path.rstrip("/")
  image_shape = tuple(model.input_shape[1:])
  encoder = models.get_encoder(model)
  denoised_shape, latent_shape = tuple(model.output_shape[1:]), tuple(encoder.output_shape[1:])

  def denoise(images):
    return model(images, training=False)

  def signature(endpoint, function, output_shape):
    return lambda images: _in_chunks(function, _checked_images(images, endpoint, image_shape),
                                     chunk_size, output_shape)

  serving = signature(SERVING_ENDPOINT, denoise, denoised_shape)
  encode = signature(ENCODE_ENDPOINT, lambda images: encoder(images, training=False),
                     latent_shape)
  # The scaling of training itself, so clients cannot skew the input; per
  # slice, so the float copy of the pixels is bounded too.
  serving_uint8 = signature(UINT8_ENDPOINT, lambda pixels: denoise(pipeline.scale_images(pixels)),
                            denoised_shape)
  # Unknown shapes on purpose: see `_checked_images`.
  float_signature = [tf.TensorSpec(None, tf.float32, name="images")]
  uint8_signature = [tf.TensorSpec(None, tf.uint8, name="images")]
  archive = keras.export.ExportArchive()
  archive.track(model)
  # The first endpoint added becomes the SavedModel's serving_default.
  archive.add_endpoint(
      name=SERVING_ENDPOINT,
      fn=lambda images: {"denoised": serving(images)},
      input_signature=float_signature)
  archive.add_endpoint(
      name=ENCODE_ENDPOINT,
      fn=lambda images: {"latent": encode(images)},
      input_signature=float_signature)
  archive.add_endpoint(
      name=UINT8_ENDPOINT,
      fn=lambda images: {"denoised": serving_uint8(images)},
      input_signature=uint8_signature)

  _remove_temporaries(path)
  temporary = f"{path}{_TEMPORARY_INFIX}{os.getpid()}"
  try:
    archive.write_out(temporary, verbose=False)
    fileio.write_json(os.path.join(temporary, EXPORT_INFO_PATH), {
        "weights_fingerprint": checkpoints.weights_fingerprint(model),
        "training_run": training_run,
    })
  except BaseException:
    if tf.io.gfile.exists(temporary):
      safe_files.remove_tree(temporary)
    raise
  fileio.replace_directory(temporary, path)
  logging.info("Exported the SavedModel to %s.", path)
