"""The blessing rule: is the candidate good enough to replace the model in service?

TFX's Evaluator blesses a model against a value threshold (an absolute bar) and
a change threshold (not worse than the baseline by more than a tolerance). This
is the same rule on one number, the PSNR (dB, mean over images) of the denoised
fixed noisy test set (`trainer.pipeline.scores`), higher is better:

- the candidate must reach `min_psnr_db`;
- if a model is in service, the candidate may be at most `max_psnr_drop_db`
  below it (0 means "at least as good");
- a candidate with the very weights of the model in service is not blessed:
  pushing it would only add a copy (a pipeline rerun whose training had
  already finished).

The first run, with nothing in service, is judged on the bar alone.
"""

import dataclasses

from trainer import errors

# The bar: what the noisy input itself scores at the default noise (Gaussian
# 0.4, 11.0 dB on MNIST's test set): a model must do better than no denoising.
# configs/test.py's 32 steps reach 11.6 dB, configs/default.py's 50 epochs
# about 19.7 dB. Raise it (--min_psnr_db) for other noise levels.
DEFAULT_MIN_PSNR_DB = 11.0
# How far below the model in service a candidate may score (dB).
DEFAULT_MAX_PSNR_DROP_DB = 0.0


@dataclasses.dataclass(frozen=True)
class Decision:
  """Whether the candidate is blessed, and why, in one sentence."""
  blessed: bool
  reason: str


def decide(candidate_db: float, serving_db: float | None, *, min_psnr_db: float,
           max_psnr_drop_db: float, same_weights: bool = False,
           serving_version: int | None = None) -> Decision:
  """Applies the rule of the module docstring to the two models' PSNRs (dB).

  `serving_db` is None when nothing is in service; `serving_version` names it
  in the reason.
  """
  if max_psnr_drop_db < 0:
    raise errors.ConfigError(f"max_psnr_drop_db={max_psnr_drop_db} is negative; pass 0 to require a "
                             "candidate at least as good as the model in service, or a tolerance in dB.")
  serving = f"version {serving_version}" if serving_version is not None else "the serving model"
  failures = []
  if not candidate_db >= min_psnr_db:  # Written so that NaN fails.
    failures.append(f"its PSNR {candidate_db:.3f} dB is below the threshold "
                    f"{min_psnr_db:.3f} dB")
  if serving_db is not None and not candidate_db >= serving_db - max_psnr_drop_db:
    failures.append(f"it is {serving_db - candidate_db:.3f} dB worse than {serving} in service "
                    f"({serving_db:.3f} dB), more than the tolerance {max_psnr_drop_db:.3f} dB")
  if failures:
    return Decision(False, "Not blessed: " + "; ".join(failures) + ".")
  if same_weights:
    return Decision(False, f"Not blessed: it has the same weights as {serving} in service "
                           "(nothing new to push).")
  if serving_db is None:
    return Decision(True, f"Blessed: nothing is in service and its PSNR {candidate_db:.3f} dB "
                          f"reaches the threshold {min_psnr_db:.3f} dB.")
  return Decision(True, f"Blessed: its PSNR {candidate_db:.3f} dB reaches the threshold "
                        f"{min_psnr_db:.3f} dB and is {candidate_db - serving_db:+.3f} dB against "
                        f"{serving} in service ({serving_db:.3f} dB; tolerance "
                        f"{max_psnr_drop_db:.3f} dB).")
