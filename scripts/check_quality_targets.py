"""Checks the denoising-quality targets against a `python -m trainer.evaluate` report.

  python scripts/check_quality_targets.py --report=runs/dense/eval/report.json \
      [--dense=dense] [--conv=conv] [--unet=unet] [--blind=blind]

The model names are those of the report (a workdir's basename by default). The
targets, on the reference noise (Gaussian 0.4 clipped), per-image mean PSNR:
- conv: >= 22.3 dB, trained <= 30 epochs, fewer parameters than the dense model;
- unet: >= 23.0 dB, trained <= 20 epochs;
- every model beats every tuned classical baseline on the same images;
- blind: within 0.3 dB of the dense single-level model at the reference level,
  above it at every other level of the reference noise type;
- the linear probe on the dense model's code of noisy images beats the one on
  the same noisy pixels.
Epochs and parameter counts come from the report's training_runs (what each
model's export records, trainer/export.py). Prints one line per target and
exits 1 if any fails.
"""

import json
import sys

from absl import app
from absl import flags

_REPORT = flags.DEFINE_string("report", None, "report.json written by trainer.evaluate.")
_DENSE = flags.DEFINE_string("dense", "dense", "Report name of the dense (default config) model.")
_CONV = flags.DEFINE_string("conv", "conv", "Report name of the configs/conv.py model.")
_UNET = flags.DEFINE_string("unet", "unet", "Report name of the configs/unet.py model.")
_BLIND = flags.DEFINE_string("blind", "blind", "Report name of the configs/blind.py model.")
flags.mark_flag_as_required("report")

CONV_MIN_PSNR_DB, CONV_MAX_EPOCHS = 22.3, 30
UNET_MIN_PSNR_DB, UNET_MAX_EPOCHS = 23.0, 20
BLIND_MAX_LOSS_DB = 0.3


def _level_key(report, level) -> str:
  """The report's key of `level` for the reference noise type."""
  levels = report["results"][report["reference"]["type"]]
  matches = [key for key in levels if float(key) == float(level)]
  if not matches:
    raise KeyError(f"level {level} of {report['reference']['type']} is not in the report")
  return matches[0]


def reference_psnr(report: dict, method: str, level=None) -> float:
  """Per-image mean PSNR of `method` on the reference noise type at `level` (default: reference)."""
  level = report["reference"]["level"] if level is None else level
  entry = report["results"][report["reference"]["type"]][_level_key(report, level)]
  return entry["metrics"][method]["psnr_mean_db"]


def _run_info(report: dict, name: str) -> dict:
  """The training run (epochs, parameters) of the model the report evaluated as `name`."""
  run = report["training_runs"][name]
  if run is None:
    raise KeyError(f"{name}'s export records no training run (export it again with "
                   "trainer.main)")
  return run


def check_targets(report: dict, dense: str, conv: str, unet: str, blind: str) -> list:
  """[(target, measured, passed)] for every target; a model missing from the report fails."""
  results = []

  def check(target, measure):
    try:
      measured, passed = measure()
    except (KeyError, OSError) as error:
      measured, passed = f"not measured ({error})", False
    results.append((target, measured, passed))

  def conv_target():
    psnr, info, dense_info = (reference_psnr(report, conv), _run_info(report, conv),
                              _run_info(report, dense))
    return (f"{psnr:.2f} dB after {info['epochs']:g} epochs, {info['num_parameters']:,} "
            f"parameters (dense {dense_info['num_parameters']:,})",
            psnr >= CONV_MIN_PSNR_DB and info["epochs"] <= CONV_MAX_EPOCHS
            and info["num_parameters"] < dense_info["num_parameters"])

  def unet_target():
    psnr, info = reference_psnr(report, unet), _run_info(report, unet)
    return (f"{psnr:.2f} dB after {info['epochs']:g} epochs",
            psnr >= UNET_MIN_PSNR_DB and info["epochs"] <= UNET_MAX_EPOCHS)

  def baselines_target():
    entry = report["results"][report["reference"]["type"]][_level_key(
        report, report["reference"]["level"])]
    margins = entry["margin_over_best_baseline"]
    text = ", ".join(f"{name} +{margin['margin_db']:.2f} dB over {margin['best_baseline']}"
                     for name, margin in margins.items())
    return text, bool(margins) and all(margin["margin_db"] > 0 for margin in margins.values())

  def blind_target():
    reference_level = float(report["reference"]["level"])
    levels = sorted(float(key) for key in report["results"][report["reference"]["type"]])
    gaps = {level: reference_psnr(report, blind, level) - reference_psnr(report, dense, level)
            for level in levels}
    text = ", ".join(f"{level:g}: {gap:+.2f} dB" for level, gap in gaps.items())
    return (f"blind - dense {text}",
            gaps[reference_level] >= -BLIND_MAX_LOSS_DB
            and all(gap > 0 for level, gap in gaps.items() if level != reference_level))

  def probe_target():
    features = report["representation"]["features"]
    code, pixels = (features[dense]["probe_accuracy_noisy"],
                    features["raw_pixels"]["probe_accuracy_noisy"])
    return f"noisy: code {code:.4f}, pixels {pixels:.4f}", code > pixels

  check(f"conv >= {CONV_MIN_PSNR_DB} dB in <= {CONV_MAX_EPOCHS} epochs, fewer parameters "
        "than dense", conv_target)
  check(f"unet >= {UNET_MIN_PSNR_DB} dB in <= {UNET_MAX_EPOCHS} epochs", unet_target)
  check("every model beats every tuned baseline (reference noise)", baselines_target)
  check(f"blind within {BLIND_MAX_LOSS_DB} dB of dense at the reference level, above it at "
        "the others", blind_target)
  check("linear probe on the dense code beats noisy pixels", probe_target)
  return results


def main(argv):
  del argv
  with open(_REPORT.value) as file:
    report = json.load(file)
  results = check_targets(report, _DENSE.value, _CONV.value, _UNET.value, _BLIND.value)
  for target, measured, passed in results:
    print(f"{'PASS' if passed else 'FAIL'}  {target}: {measured}")
  sys.exit(0 if all(passed for _, _, passed in results) else 1)


if __name__ == "__main__":
  app.run(main)
