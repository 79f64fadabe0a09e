"""The wiener baseline's linear filter: ridge regression from noisy to clean pixels.

The best linear filter (see trainer/evaluation/baselines.py, "wiener"): a
global affine map from all noisy pixels of an image to all its clean pixels,
fitted by ridge least squares on training images; `tuning.tune_baseline`
picks the ridge strength, `denoise` applies the map.
"""

import dataclasses
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class WienerNormalEquations:
  """The ridge regression's normal equations, from the centred fitting data.

  With X the centred noisy and Y the centred clean fitting images ([M, D]), the
  weights for ridge r solve (X^T X + r I) W = X^T Y.
  """
  mean_noisy: np.ndarray  # [D]
  mean_clean: np.ndarray  # [D]
  gram: np.ndarray  # X^T X, [D, D]
  cross: np.ndarray  # X^T Y, [D, D]

  def weights(self, relative_ridge: float) -> np.ndarray:
    """The [D, D] weights for this ridge strength (a fraction of the mean eigenvalue)."""
    from scipy import linalg  # pylint: disable=g-import-not-at-top  (the eval extra)
    size = self.gram.shape[0]
    ridge = relative_ridge * float(np.trace(self.gram)) / size
    # Cholesky: the regularised Gram matrix is positive definite. (One eigendecomposition
    # shared by all ridge values needs fewer flops, but on busy cores with OpenBLAS
    # threads numpy's eigh of 784x784 took anywhere from 0.1 s to 10 s; a Cholesky
    # solve stayed under 1 s.)
    factor = linalg.cho_factor(self.gram + ridge * np.eye(size), check_finite=False)
    return linalg.cho_solve(factor, self.cross, check_finite=False)


def normal_equations(fit_noisy: np.ndarray,
                             fit_clean: np.ndarray) -> WienerNormalEquations:
  noisy = fit_noisy.reshape(fit_noisy.shape[0], -1).astype(np.float64)
  clean = fit_clean.reshape(fit_clean.shape[0], -1).astype(np.float64)
  mean_noisy = noisy.mean(axis=0)
  mean_clean = clean.mean(axis=0)
  noisy -= mean_noisy
  clean -= mean_clean
  return WienerNormalEquations(mean_noisy, mean_clean, noisy.T @ noisy, noisy.T @ clean)


def fitted_arrays(equations: WienerNormalEquations,
                   relative_ridge: float) -> dict[str, np.ndarray]:
  """The arrays `denoise` needs, float32."""
  return {
      "mean_noisy": equations.mean_noisy.astype(np.float32),
      "mean_clean": equations.mean_clean.astype(np.float32),
      "weights": equations.weights(relative_ridge).astype(np.float32),
  }


def denoise(images: np.ndarray, fitted: Mapping[str, np.ndarray]) -> np.ndarray:
  """The affine map's output, clipped to [0, 1]: [N, H, W, C] float32."""
  weights = fitted["weights"]
  flat = images.reshape(images.shape[0], -1)
  if flat.shape[1] != weights.shape[0]:
    raise ValueError(
        f"noisy has shape {images.shape}, {flat.shape[1]} values per image, but this wiener "
        f"filter was fitted on images of {weights.shape[0]} values: [N, H, W, C] with the "
        "fitting images' H, W, C.")
  denoised = (flat - fitted["mean_noisy"]) @ weights + fitted["mean_clean"]
  return np.clip(denoised.reshape(images.shape), 0.0, 1.0).astype(np.float32)
