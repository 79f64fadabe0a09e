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
"""

import os

from absl import logging
import keras
import tensorflow as tf

from input_pipeline import pipeline
from trainer import models
from trainer import reports

SERVING_ENDPOINT = "serving_default"
ENCODE_ENDPOINT = "encode"
UINT8_ENDPOINT = "serving_uint8"
# `export_saved_model(model, path)` writes `path + _TEMPORARY_INFIX + pid` first.
_TEMPORARY_INFIX = ".tmp-"

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


def _remove_temporaries(path: str) -> None:
  """Removes `path`'s temporary siblings left by an export that was killed."""
  for stale in tf.io.gfile.glob(path + _TEMPORARY_INFIX + "*"):
    logging.info("Removing %s, left by an interrupted export.", stale)
    tf.io.gfile.rmtree(stale)


def export_saved_model(model: keras.Model, path: str) -> None:
  """Writes `model` (built by `models.create_model`) as a SavedModel at `path`, atomically.

  The signatures take images of the shape the model was built for. The model
  is written to a temporary sibling of `path`, then renamed into place, so
  `path` either holds the previous complete export or the new complete one,
  never a partial one (a kill between the two renames that replace an older
  export leaves no `path`, and complete temporaries that the next export
  removes). On a local disk each rename is atomic; on GCS (`gs://`) renaming a
  directory copies then deletes each object, so a kill there can still leave
  an incomplete `path`.
  """
  path = path.rstrip("/")
  image_shape = tuple(model.input_shape[1:])
  encoder = models.get_encoder(model)

  def checked(endpoint):
    return lambda images: _checked_images(images, endpoint, image_shape)

  def scaled_uint8(images):
    # The scaling of training itself, so clients cannot skew the input.
    return pipeline.scale_images(_checked_images(images, UINT8_ENDPOINT, image_shape))

  serving_images, encode_images = checked(SERVING_ENDPOINT), checked(ENCODE_ENDPOINT)
  # Unknown shapes on purpose: see `_checked_images`.
  float_signature = [tf.TensorSpec(None, tf.float32, name="images")]
  uint8_signature = [tf.TensorSpec(None, tf.uint8, name="images")]
  archive = keras.export.ExportArchive()
  archive.track(model)
  # The first endpoint added becomes the SavedModel's serving_default.
  archive.add_endpoint(
      name=SERVING_ENDPOINT,
      fn=lambda images: {"denoised": model(serving_images(images), training=False)},
      input_signature=float_signature)
  archive.add_endpoint(
      name=ENCODE_ENDPOINT,
      fn=lambda images: {"latent": encoder(encode_images(images), training=False)},
      input_signature=float_signature)
  archive.add_endpoint(
      name=UINT8_ENDPOINT,
      fn=lambda images: {"denoised": model(scaled_uint8(images), training=False)},
      input_signature=uint8_signature)

  _remove_temporaries(path)
  temporary = f"{path}{_TEMPORARY_INFIX}{os.getpid()}"
  try:
    archive.write_out(temporary, verbose=False)
  except BaseException:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.rmtree(temporary)
    raise
  reports.replace_directory(temporary, path)
  logging.info("Exported the SavedModel to %s.", path)
