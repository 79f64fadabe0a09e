"""The pictures of a run and of the evaluation: matplotlib PNGs and TensorBoard image grids."""

import io

import matplotlib

matplotlib.use("Agg")  # No display on training machines.
from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
import numpy as np

from trainer import fileio


def _save_figure(figure, path: str) -> None:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  fileio.write_bytes(path, buffer.getvalue())


def plot_loss(history: list[dict[str, float]], loss_name: str, path: str) -> None:
  """Train and validation loss per epoch, log scale."""
  epochs = [entry["epoch"] for entry in history]
  figure, axes = pyplot.subplots(figsize=(8, 4.5))
  axes.plot(epochs, [entry["train_loss"] for entry in history], marker=".",
            label="train (noisy train -> clean)")
  axes.plot(epochs, [entry["eval_loss"] for entry in history], marker=".",
            label="validation (noisy test -> clean)")
  axes.set_yscale("log")
  axes.set_xlabel("epoch")
  axes.set_ylabel(f"loss ({loss_name})")
  axes.set_title("Denoising autoencoder loss")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend()
  _save_figure(figure, path)


def plot_denoised(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray,
                  path: str) -> None:
  """Rows original / noisy / denoised, one column per image."""
  plot_image_rows((("original", clean), ("noisy", noisy), ("denoised", denoised)), path)


def plot_image_rows(rows, path: str, title: str | None = None) -> None:
  """A row of images [n, H, W, 1] in [0, 1] per (label, images) of `rows`, a column per image."""
  num_images = rows[0][1].shape[0]
  figure, axes = pyplot.subplots(len(rows), num_images, squeeze=False,
                                 figsize=(1.6 * num_images, 1.8 * len(rows)))
  if title:
    figure.suptitle(title)
  for row, (label, images) in enumerate(rows):
    for column in range(num_images):
      axis = axes[row][column]
      axis.imshow(images[column, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
      axis.set_xticks([])
      axis.set_yticks([])
      if column == 0:
        axis.set_ylabel(label)
  figure.tight_layout()
  _save_figure(figure, path)


def plot_lines(series, x_label: str, y_label: str, title: str, path: str,
               dashed=()) -> None:
  """One line per `label: (xs, ys)` of `series`; labels in `dashed` are drawn dashed."""
  figure, axes = pyplot.subplots(figsize=(8, 5))
  for label, (xs, ys) in series.items():
    axes.plot(xs, ys, marker=".", linestyle="--" if label in dashed else "-", label=label)
  axes.set_xlabel(x_label)
  axes.set_ylabel(y_label)
  axes.set_title(title)
  axes.grid(True, alpha=0.3)
  axes.legend(fontsize="small")
  _save_figure(figure, path)


def image_grid(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray) -> np.ndarray:
  """One [1, 3 * 28, n * 28, 1] image: rows original, noisy, denoised."""
  return image_rows_grid((clean, noisy, denoised))


def image_rows_grid(rows) -> np.ndarray:
  """One [1, len(rows) * H, n * W, 1] image: each [n, H, W, 1] array of `rows` as a row."""
  return np.concatenate([np.concatenate(list(images), axis=1) for images in rows],
                        axis=0)[np.newaxis]
