"""SavedModel export for serving.

Signatures (fixed: serving clients rely on them):
- `serving_default`: `images` float32 [batch, 28, 28, 1] in [0, 1]
  -> {"denoised": float32 [batch, 28, 28, 1]}
- `encode`: `images` -> {"latent": float32 [batch, latent_dim]}
"""

import keras
import tensorflow as tf

from trainer import models

SERVING_ENDPOINT = "serving_default"
ENCODE_ENDPOINT = "encode"


def export_saved_model(model: keras.Model, path: str) -> None:
  """Writes `model` (built by `models.create_model`) as a SavedModel at `path`.

  The signatures take images of the shape the model was built for.
  """
  encoder = models.get_encoder(model)
  input_signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32,
                                   name="images")]
  archive = keras.export.ExportArchive()
  archive.track(model)
  # The first endpoint added becomes the SavedModel's serving_default.
  archive.add_endpoint(
      name=SERVING_ENDPOINT,
      fn=lambda images: {"denoised": model(images, training=False)},
      input_signature=input_signature)
  archive.add_endpoint(
      name=ENCODE_ENDPOINT,
      fn=lambda images: {"latent": encoder(images, training=False)},
      input_signature=input_signature)
  archive.write_out(path, verbose=False)
