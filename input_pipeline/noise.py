"""Noise models that corrupt clean images in [0, 1].

Every function is a pure function of (images, noise config, seed): stateless
random ops only, so the same seed always gives the same noise, eagerly or
inside a tf.data graph, and no global RNG state is touched. They work on a
single image [28, 28, 1] or on a batch [batch, 28, 28, 1] alike.

A noise config has a `type` and a `factor` (the level), and optionally, for
training blind denoisers, a `factor_range` (lo, hi) from which each image draws
its own level, and `mixture_types` from which each image draws its own type.
Evaluation uses fixed noise, a `NoiseSpec`: one type at one level (the
training config's reference noise is `NoiseSpec.from_config`), so that its numbers
compare across runs.

Training may draw its Gaussian values from a fixed table instead (`generator`
'table', see `table_normal`): each image's values are made of two random rows
of the table. That costs two row gathers instead of Philox and Box-Muller per
pixel; evaluation noise is always drawn exactly.
"""

import dataclasses
import math

import ml_collections
import numpy as np
import tensorflow as tf

from trainer import errors

NOISE_TYPES = ("gaussian", "salt_and_pepper", "masking")
# Noise types whose factor is a fraction of pixels, hence limited to [0, 1].
FRACTION_NOISE_TYPES = ("salt_and_pepper", "masking")
# Constants of TensorFlow's Box-Muller kernel (random_distributions.h), as float32.
_SMALLEST_UNIFORM = np.float32(1e-7)
_TWO_PI = np.float32(2.0 * math.pi)
# How training draws Gaussian values (`noise.generator`).
GENERATORS = ("philox", "table")
# Bounds of `noise.table_num_values`: at least a few images' worth of distinct
# windows, at most 1 GiB of float32.
_MIN_TABLE_VALUES = 65_536
_MAX_TABLE_VALUES = 2**28


def _factor_range(noise_config) -> tuple[float, ...]:
  # getattr, not .get: a NoiseSpec has neither field.
  return tuple(getattr(noise_config, "factor_range", None) or ())


def _mixture_types(noise_config) -> tuple[str, ...]:
  return _type_names(getattr(noise_config, "mixture_types", None) or ())


def _type_names(entries) -> tuple[str, ...]:
  """`noise.mixture_types` as a tuple of names, however the command line spelled it.

  ml_collections reads an override of a tuple field with `ast.literal_eval`;
  unquoted names are no Python literal, so `--config.noise.mixture_types=
  (gaussian,masking)` arrives as the one string '(gaussian,masking)'. Each
  string entry is split on commas, without brackets, quotes or spaces.
  """
  if isinstance(entries, str):
    entries = (entries,)
  names = []
  for entry in entries:
    if not isinstance(entry, str):
      names.append(entry)  # Refused by the type check, naming it.
      continue
    names += [name.strip(" '\"") for name in entry.strip(" ()[]").split(",")
              if name.strip(" '\"")]
  return tuple(names)


def normalize_mixture_types(noise_config: ml_collections.ConfigDict) -> None:
  """Stores `noise.mixture_types` as a tuple of names (see `_type_names`), so config.json,
  the export's record and the resume check see the names, not a command line's string."""
  raw = noise_config.get("mixture_types", None)
  if raw is not None and tuple(raw) != _type_names(raw):
    noise_config.mixture_types = _type_names(raw)


def is_blind(noise_config: ml_collections.ConfigDict) -> bool:
  """Whether images draw their own noise level or type (a blind denoiser's training noise)."""
  return bool(_factor_range(noise_config) or _mixture_types(noise_config))


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
  """One noise type at one level, validated when made: what evaluation noise is.

  `add_noise` takes it where it takes a noise config (it has no range or mixture).
  """
  type: str
  factor: float

  def __post_init__(self):
    _validate_type(self.type, "noise.type")
    _validate_factor(self.type, self.factor, "noise.factor")
    object.__setattr__(self, "factor", float(self.factor))

  @classmethod
  def from_config(cls, noise_config) -> "NoiseSpec":
    """The fixed part (`type`, `factor`) of a noise config, validated."""
    return cls(noise_config.type, noise_config.factor)


def generator(noise_config: ml_collections.ConfigDict) -> str:
  """How Gaussian training values are drawn: 'philox' (exact; configs without the field) or 'table'."""
  return getattr(noise_config, "generator", "philox")


def validate_noise_config(noise_config: ml_collections.ConfigDict) -> None:
  """Raises errors.ConfigError with the bad value and the fix if the noise config is invalid."""
  _validate_type(noise_config.type, "noise.type")
  for noise_type in _mixture_types(noise_config):
    _validate_type(noise_type, "noise.mixture_types entry",
                   "--config.noise.mixture_types='(gaussian,masking)', or () for none")
  _validate_factor(noise_config.type, noise_config.factor, "noise.factor")
  factor_range = _factor_range(noise_config)
  if factor_range:
    if len(factor_range) != 2 or not factor_range[0] <= factor_range[1]:
      raise errors.ConfigError(
          f"noise.factor_range={factor_range} must be two levels (lo, hi) with lo <= hi, "
          "e.g. --config.noise.factor_range='(0.1, 0.8)'.")
    for noise_type in _mixture_types(noise_config) or (noise_config.type,):
      for level in factor_range:
        _validate_factor(noise_type, level, "noise.factor_range")
  _validate_generator(noise_config)


def _validate_generator(noise_config: ml_collections.ConfigDict) -> None:
  name = generator(noise_config)
  if name not in GENERATORS:
    raise errors.ConfigError(f"Unknown noise.generator {name!r}; valid generators are "
                             f"{', '.join(GENERATORS)} (set --config.noise.generator=philox).")
  if name != "table":
    return
  if "gaussian" not in (_mixture_types(noise_config) or (noise_config.type,)):
    raise errors.ConfigError(
        f"noise.generator='table' draws Gaussian values, but noise.type={noise_config.type!r} "
        "draws none; use --config.noise.generator=philox.")
  size = noise_config.get("table_num_values", None)
  if (isinstance(size, bool) or not isinstance(size, int)
      or not _MIN_TABLE_VALUES <= size <= _MAX_TABLE_VALUES):
    raise errors.ConfigError(
        f"noise.table_num_values={size!r} must be an integer in [{_MIN_TABLE_VALUES:,}, "
        f"{_MAX_TABLE_VALUES:,}] (e.g. --config.noise.table_num_values=4194304).")


def _validate_type(noise_type, name: str, example: str = "--config.noise.type=gaussian") -> None:
  if noise_type not in NOISE_TYPES:
    raise errors.ConfigError(
        f"Unknown {name} {noise_type!r}; valid types are "
        f"{', '.join(NOISE_TYPES)} (set e.g. {example}).")


def _validate_factor(noise_type: str, factor, name: str) -> None:
  if not math.isfinite(factor):
    raise errors.ConfigError(
        f"{name}={factor} is not a finite number; set --config.{name} to e.g. "
        "0.4 (gaussian std) or 0.2 (fraction of pixels).")
  if noise_type in FRACTION_NOISE_TYPES and not 0.0 <= factor <= 1.0:
    raise errors.ConfigError(
        f"{name}={factor} is not a fraction of pixels; for "
        f"{noise_type} noise it must be in [0, 1] "
        f"(e.g. --config.{name}=0.2).")
  if noise_type == "gaussian" and not factor >= 0.0:
    raise errors.ConfigError(
        f"{name}={factor} is a negative standard deviation; for gaussian "
        f"noise it must be >= 0 (e.g. --config.{name}=0.4).")


def add_noise(images: tf.Tensor, noise_config: ml_collections.ConfigDict,
              seed: tf.Tensor, table: tf.Tensor | None = None) -> tf.Tensor:
  """Returns `images` (float in [0, 1]) corrupted by the configured noise, clipped to [0, 1].

  Args:
    images: float32 tensor of [28, 28, 1] or [batch, 28, 28, 1] (any trailing
      [height, width, channels]), values in [0, 1].
    noise_config: `config.noise`: `type` in NOISE_TYPES and `factor`, and
      optionally `factor_range` and `mixture_types` (see the module docstring;
      a mixture draws every type for the whole batch, then keeps one per image).
    seed: shape [2] integer tensor for the stateless random ops.
    table: `gaussian_table(...)` to draw Gaussian values from it; None draws
      them exactly (Philox and Box-Muller).
  """
  return tf.clip_by_value(add_unclipped_noise(images, noise_config, seed, table), 0.0, 1.0)


def add_unclipped_noise(images: tf.Tensor, noise_config: ml_collections.ConfigDict,
                        seed: tf.Tensor, table: tf.Tensor | None = None) -> tf.Tensor:
  """`add_noise` before clipping: Gaussian noise may leave [0, 1], the other types never do."""
  factor_range, mixture_types = _factor_range(noise_config), _mixture_types(noise_config)
  if not (factor_range or mixture_types):
    return _corrupt(images, noise_config.type, tf.cast(noise_config.factor, images.dtype), seed,
                    table)
  # Blind training noise: one level (and type) per image, drawn from streams
  # of their own so that the pixel noise itself is the fixed-level noise's.
  level_seed, type_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  # [batch, 1, 1, 1] for a batch, [1, 1, 1] for one image: broadcasts per image.
  per_image_shape = tf.concat([tf.shape(images)[:-3], [1, 1, 1]], axis=0)
  if factor_range:
    factor = tf.random.stateless_uniform(
        per_image_shape, seed=level_seed, minval=factor_range[0], maxval=factor_range[1],
        dtype=images.dtype)
  else:
    factor = tf.fill(per_image_shape, tf.cast(noise_config.factor, images.dtype))
  if not mixture_types:
    return _corrupt(images, noise_config.type, factor, seed, table)
  chosen = tf.random.stateless_uniform(per_image_shape, seed=type_seed, maxval=len(mixture_types),
                                       dtype=tf.int32)
  noisy = images
  for index, noise_type in enumerate(mixture_types):
    noisy = tf.where(chosen == index, _corrupt(images, noise_type, factor, seed, table), noisy)
  return noisy


def standard_normal(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """`tf.random.stateless_normal(shape, seed)` (float32), about 1.4x faster on a CPU.

  The same Box-Muller transform as TensorFlow's kernel, of the same Philox
  uniforms: for each pair (u1, u2), sin and cos of 2 pi u2 times
  sqrt(-2 log u1), with u1 floored at 1e-7. TensorFlow evaluates it one pair
  at a time with scalar calls; here each step is one vectorised op over the
  whole batch. The values agree with `stateless_normal`'s to a few float32
  roundings (|difference| < 1e-5): noisy images, and so every evaluation
  number, are the same as with TensorFlow's own op. Why it matters: drawing
  Gaussian noise is most of the input pipeline's work, and on a 2-core
  machine the pipeline shares its cores with training.
  """
  size = tf.reduce_prod(shape)
  # Philox gives the uniforms in the same order as to the normal kernel: one
  # (u1, u2) pair per two outputs; an odd size draws one spare.
  pairs = tf.random.stateless_uniform(tf.stack([(size + 1) // 2, 2]), seed=seed)
  radius = tf.sqrt(-2.0 * tf.math.log(tf.maximum(pairs[:, 0], _SMALLEST_UNIFORM)))
  angle = _TWO_PI * pairs[:, 1]
  normal = tf.stack([tf.sin(angle) * radius, tf.cos(angle) * radius], axis=1)
  return tf.reshape(tf.reshape(normal, [-1])[:size], shape)


def gaussian_table(noise_config: ml_collections.ConfigDict, seed: tf.Tensor,
                   pixels_per_image: int) -> tf.Tensor | None:
  """The table of the 'table' generator, or None for 'philox'.

  `noise.table_num_values` float32 standard normals (rounded down to whole
  rows), as rows of `pixels_per_image`: drawn once, exactly, from `seed`, when
  the training pipeline is built; the pipeline then only gathers rows of it.
  """
  if generator(noise_config) != "table":
    return None
  num_rows = noise_config.table_num_values // pixels_per_image
  return tf.reshape(standard_normal(tf.constant([num_rows * pixels_per_image]), seed),
                    [num_rows, pixels_per_image])


def table_normal(shape: tf.Tensor, seed: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
  """Standard normal values of `shape` ([..., height, width, channels]) made from `table` rows.

  Each image's values are (+-a +-b) / sqrt(2) for two different rows a, b of
  the table (a row holds one image: height * width * channels values), with a
  sign per row and image, both rows rotated by shifts drawn per call: every
  value is still exactly N(0, 1). A table of R rows gives 2 R (R - 1) signed
  pairs (about 900 million for the default table and MNIST), each at any of
  784 x 784 rotations. It costs two row gathers, two rotations and a few
  multiply-adds per image instead of Philox uniforms, a log, a square root, a
  sine and a cosine per pixel pair. What is given up is independence between
  images that share a row. Evaluation never uses it; its effect on a full
  training run is measured in docs/performance.md.
  """
  num_images = tf.reduce_prod(shape[:-3])
  num_rows, row_size = tf.unstack(tf.shape(table))
  first_seed, second_seed, shift_seed, sign_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=4))
  first = tf.random.stateless_uniform([num_images], seed=first_seed, maxval=num_rows,
                                      dtype=tf.int32)
  # Another row than the first: first + 1 + k (mod rows), k uniform in [0, rows - 1).
  skip = tf.random.stateless_uniform([num_images], seed=second_seed, maxval=num_rows - 1,
                                     dtype=tf.int32)
  second = (first + 1 + skip) % num_rows
  # Each call rotates the first rows and the second rows by shifts of its own,
  # so a row seldom meets the same pixels twice: without this, a model learnt
  # the table's rows as fixed patterns to subtract (docs/performance.md).
  shifts = tf.unstack(tf.random.stateless_uniform([2], seed=shift_seed, maxval=row_size,
                                                  dtype=tf.int32))
  # And each row of each image gets a sign of its own: (+-a +-b) / sqrt(2).
  signs = tf.cast(tf.random.stateless_uniform([2, num_images, 1], seed=sign_seed, maxval=2,
                                              dtype=tf.int32), table.dtype) * 2.0 - 1.0
  scale = np.float32(math.sqrt(0.5))
  rows = (tf.roll(tf.gather(table, first), shifts[0], axis=1) * (signs[0] * scale)
          + tf.roll(tf.gather(table, second), shifts[1], axis=1) * (signs[1] * scale))
  return tf.reshape(rows, shape)


def _corrupt(images: tf.Tensor, noise_type: str, factor: tf.Tensor, seed: tf.Tensor,
             table: tf.Tensor | None = None) -> tf.Tensor:
  """`images` with `noise_type` noise at level `factor` (a scalar, or one per image), unclipped."""
  shape = tf.shape(images)
  if noise_type == "gaussian":
    normal = standard_normal(shape, seed) if table is None else table_normal(shape, seed, table)
    return images + factor * tf.cast(normal, images.dtype)
  if noise_type == "salt_and_pepper":
    # One draw picks the corrupted pixels, an independent one picks salt or pepper.
    select_seed, value_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    corrupted = tf.random.stateless_uniform(shape, seed=select_seed) < factor
    salt = tf.random.stateless_uniform(shape, seed=value_seed) < 0.5
    return tf.where(corrupted, tf.cast(salt, images.dtype), images)
  if noise_type == "masking":
    dropped = tf.random.stateless_uniform(shape, seed=seed) < factor
    return tf.where(dropped, tf.zeros_like(images), images)
  _validate_type(noise_type, "noise.type")  # Raises for an unknown type.
  raise AssertionError(noise_type)
