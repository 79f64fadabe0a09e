"""Checks the denoising-quality targets against a `python -m trainer.evaluate` report.

  python scripts/check_quality_targets.py --report=runs/dense/eval/report.json \
      [--dense=dense] [--conv=conv] [--unet=unet] [--blind=blind] \
      [--blind_unet=blind_unet] [--blind_unet_mixture=blind_unet_mixture] \
      [--targets=models,blind_unet]

The model names are those of the report (a workdir's basename by default). The
targets, on the reference noise (Gaussian 0.4 clipped), per-image mean PSNR:
- conv: >= 22.3 dB, trained <= 30 epochs, fewer parameters than the dense model;
- unet: >= 23.0 dB, trained <= 20 epochs;
- every model beats every tuned classical baseline on the same images;
- blind: within 0.3 dB of the dense single-level model at the reference level,
  above it at every other level of the reference noise type;
- the linear probe on the dense model's code of noisy images beats the one on
  the same noisy pixels.
The blind U-Net targets (--targets=blind_unet), each against the best tuned
baseline on the same images (BM3D on its subset), per-image mean PSNR:
- blind_unet beats it at every Gaussian level of configs/evaluate.py (0.1 to
  0.8), and is within 0.3 dB of the single-level U-Net's 23.07 dB at 0.4;
- blind_unet_mixture beats it at every level of every noise type there;
- each beats it at a level outside its training range (noise.factor_range).
Epochs, parameter counts and training noise come from the report's
training_runs (what each model's export records, trainer/export.py). Prints one
line per target and exits 1 if any fails. A --report that cannot be read (missing,
a directory, not JSON, not an evaluation report) is one line on stderr and exit
status 2; a number the report lacks or holds as null (not finite) fails its
target as "not measured", naming it.
"""

import functools
import json
import math
import sys

from absl import app
from absl import flags

from configs import evaluate as evaluate_config

_REPORT = flags.DEFINE_string("report", None, "report.json written by trainer.evaluate.")
_DENSE = flags.DEFINE_string("dense", "dense", "Report name of the dense (default config) model.")
_CONV = flags.DEFINE_string("conv", "conv", "Report name of the configs/conv.py model.")
_UNET = flags.DEFINE_string("unet", "unet", "Report name of the configs/unet.py model.")
_BLIND = flags.DEFINE_string("blind", "blind", "Report name of the configs/blind.py model.")
_BLIND_UNET = flags.DEFINE_string("blind_unet", "blind_unet",
                                  "Report name of the configs/blind_unet.py model.")
_BLIND_UNET_MIXTURE = flags.DEFINE_string(
    "blind_unet_mixture", "blind_unet_mixture",
    "Report name of the configs/blind_unet_mixture.py model.")
_TARGETS = flags.DEFINE_list(
    "targets", ["models"],
    "Target groups to check: models (dense, conv, unet, blind), blind_unet (the blind U-Nets).")
flags.mark_flag_as_required("report")

CONV_MIN_PSNR_DB, CONV_MAX_EPOCHS = 22.3, 30
UNET_MIN_PSNR_DB, UNET_MAX_EPOCHS = 23.0, 20
BLIND_MAX_LOSS_DB = 0.3
# The single-level U-Net (configs/unet.py) at Gaussian 0.4, all 10,000 test images
# (docs/evaluation.md): the blind U-Net must come within BLIND_MAX_LOSS_DB of it.
UNET_SINGLE_LEVEL_PSNR_DB = 23.07
TARGET_GROUPS = ("models", "blind_unet")


def _level_key(report, level) -> str:
  """The report's key of `level` for the reference noise type."""
  levels = report["results"][report["reference"]["type"]]
  matches = [key for key in levels if float(key) == float(level)]
  if not matches:
    raise KeyError(f"level {level} of {report['reference']['type']} is not in the report")
  return matches[0]


def _number(value, what: str) -> float:
  """`value` if it is a finite number; ValueError naming `what` otherwise (null: it was not finite)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"{what} is {json.dumps(value)} in the report, not a finite number")
  return value


def reference_psnr(report: dict, method: str, level=None) -> float:
  """Per-image mean PSNR of `method` on the reference noise type at `level` (default: reference)."""
  level = report["reference"]["level"] if level is None else level
  entry = report["results"][report["reference"]["type"]][_level_key(report, level)]
  return _number(entry["metrics"][method]["psnr_mean_db"],
                 f"{method}'s PSNR at {report['reference']['type']} {level:g}")


def _margin_db(margin: dict, model: str) -> float:
  return _number(margin["margin_db"], f"{model}'s margin over {margin.get('best_baseline')}")


def _run_info(report: dict, name: str) -> dict:
  """The training run (epochs, parameters) of the model the report evaluated as `name`."""
  run = report["training_runs"][name]
  if run is None:
    raise KeyError(f"{name}'s export records no training run (export it again with "
                   "trainer.main)")
  return run


def _not_measured(error: Exception) -> str:
  """Why a target could not be measured, as a phrase."""
  if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str) and (
      " " in error.args[0]):
    return error.args[0]  # This module's own sentence.
  if isinstance(error, KeyError):
    return f"the report has no {error.args[0]!r} where this target reads it"
  if isinstance(error, (TypeError, AttributeError, IndexError)):
    return f"the report is not laid out as trainer.evaluate writes it ({error})"
  return str(error)


def _check(results: list, target: str, measure) -> None:
  """Appends (target, measured, passed); what the report lacks fails as "not measured"."""
  try:
    measured, passed = measure()
  except (KeyError, OSError, TypeError, ValueError, AttributeError, IndexError) as error:
    measured, passed = f"not measured ({_not_measured(error)})", False
  results.append((target, measured, passed))


def check_targets(report: dict, dense: str, conv: str, unet: str, blind: str) -> list:
  """[(target, measured, passed)] for every target; a model missing from the report fails."""
  results = []
  check = functools.partial(_check, results)

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
    margins = {name: _margin_db(margin, name)
               for name, margin in entry["margin_over_best_baseline"].items()}
    best = entry["margin_over_best_baseline"]
    text = ", ".join(f"{name} {margin:+.2f} dB over {best[name]['best_baseline']}"
                     for name, margin in margins.items())
    return text, bool(margins) and all(margin > 0 for margin in margins.values())

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
    code, pixels = (_number(features[dense]["probe_accuracy_noisy"], f"{dense}'s probe accuracy"),
                    _number(features["raw_pixels"]["probe_accuracy_noisy"],
                            "the raw pixels' probe accuracy"))
    return f"noisy: code {code:.4f}, pixels {pixels:.4f}", code > pixels

  check(f"conv >= {CONV_MIN_PSNR_DB} dB in <= {CONV_MAX_EPOCHS} epochs, fewer parameters "
        "than dense", conv_target)
  check(f"unet >= {UNET_MIN_PSNR_DB} dB in <= {UNET_MAX_EPOCHS} epochs", unet_target)
  check("every model beats every tuned baseline (reference noise)", baselines_target)
  check(f"blind within {BLIND_MAX_LOSS_DB} dB of dense at the reference level, above it at "
        "the others", blind_target)
  check("linear probe on the dense code beats noisy pixels", probe_target)
  return results


def _margins(report: dict, model: str, noise_type: str) -> dict:
  """{level: the model's margin (dB) over the best baseline} for every level of `noise_type`."""
  margins = {}
  for key, entry in report["results"][noise_type].items():
    margin = entry["margin_over_best_baseline"].get(model)
    if margin is None:
      raise KeyError(f"{model} has no margin over a baseline at {noise_type} {key}")
    _margin_db(margin, model)
    margins[float(key)] = margin
  return margins


def _beats_at_every_level(report: dict, model: str, noise_type: str, required_levels) -> tuple:
  """(text, passed): the model beats the best baseline at each of `required_levels`."""
  margins = _margins(report, model, noise_type)
  missing = [level for level in required_levels if float(level) not in margins]
  if missing:
    raise KeyError(f"{noise_type} level(s) {', '.join(f'{level:g}' for level in missing)} "
                   "not in the report")
  chosen = {float(level): margins[float(level)] for level in required_levels}
  text = ", ".join(f"{level:g}: {margin['margin_db']:+.2f} vs {margin['best_baseline']}"
                   for level, margin in chosen.items())
  return f"{noise_type} {text}", all(margin["margin_db"] > 0 for margin in chosen.values())


def _beats_outside_training_range(report: dict, model: str) -> tuple:
  """(text, passed): the model beats the best baseline at some level outside its training range."""
  noise = _run_info(report, model)["noise"]
  low, high = noise["factor_range"] or (noise["factor"], noise["factor"])
  types = noise["mixture_types"] or [noise["type"]]
  outside = {(noise_type, level): margin for noise_type in types if noise_type in report["results"]
             for level, margin in _margins(report, model, noise_type).items()
             if not low <= level <= high}
  if not outside:
    raise KeyError(f"no evaluated level of {', '.join(types)} is outside {model}'s training "
                   f"range [{low:g}, {high:g}]")
  text = ", ".join(f"{noise_type} {level:g}: {margin['margin_db']:+.2f} vs "
                   f"{margin['best_baseline']}"
                   for (noise_type, level), margin in sorted(outside.items()))
  return (f"trained on [{low:g}, {high:g}]; {text}",
          any(margin["margin_db"] > 0 for margin in outside.values()))


def check_blind_unet_targets(report: dict, blind_unet: str, mixture: str) -> list:
  """[(target, measured, passed)] for the blind U-Nets; a model missing from the report fails."""
  results = []
  check = functools.partial(_check, results)
  levels = evaluate_config.get_config().levels

  def near_single_level_unet():
    psnr = reference_psnr(report, blind_unet, 0.4)
    return (f"{psnr:.2f} dB (single-level U-Net {UNET_SINGLE_LEVEL_PSNR_DB:.2f})",
            psnr >= UNET_SINGLE_LEVEL_PSNR_DB - BLIND_MAX_LOSS_DB)

  def mixture_beats_everywhere():
    parts = [_beats_at_every_level(report, mixture, noise_type, type_levels)
             for noise_type, type_levels in levels.items() if type_levels]
    return "; ".join(text for text, _ in parts), all(passed for _, passed in parts)

  check(f"{blind_unet} beats the best baseline at every gaussian level "
        f"{', '.join(f'{level:g}' for level in levels.gaussian)}",
        lambda: _beats_at_every_level(report, blind_unet, "gaussian", levels.gaussian))
  check(f"{blind_unet} within {BLIND_MAX_LOSS_DB} dB of the single-level U-Net at gaussian 0.4",
        near_single_level_unet)
  check(f"{blind_unet} beats the best baseline outside its training range",
        lambda: _beats_outside_training_range(report, blind_unet))
  check(f"{mixture} beats the best baseline at every level of every noise type",
        mixture_beats_everywhere)
  check(f"{mixture} beats the best baseline outside its training range",
        lambda: _beats_outside_training_range(report, mixture))
  return results


def _fail(message: str) -> None:
  print(f"dae-trainer check_quality_targets: {message}", file=sys.stderr)
  sys.exit(2)


def load_report(path: str) -> dict:
  """The evaluation report at `path`; a file that is not one ends the program in one line (exit 2)."""
  if not path:
    _fail("--report is empty; pass the report.json that python -m trainer.evaluate wrote, "
          "e.g. --report=runs/dense/eval/report.json.")
  try:
    with open(path, encoding="utf-8") as file:
      report = json.load(file)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    _fail(f"--report={path} cannot be read as JSON ({type(error).__name__}: {reason}); pass "
          "the report.json that python -m trainer.evaluate wrote.")
  if not (isinstance(report, dict) and isinstance(report.get("results"), dict)
          and isinstance(report.get("reference"), dict)):
    _fail(f"--report={path} is not an evaluation report (a JSON object with 'results' and "
          "'reference'); pass the report.json that python -m trainer.evaluate wrote.")
  return report


def main(argv):
  del argv
  unknown = sorted(set(_TARGETS.value) - set(TARGET_GROUPS))
  if unknown:
    raise app.UsageError(f"--targets={','.join(_TARGETS.value)}: unknown group(s) "
                         f"{', '.join(unknown)}; valid groups are {', '.join(TARGET_GROUPS)}.")
  report = load_report(_REPORT.value)
  results = []
  if "models" in _TARGETS.value:
    results += check_targets(report, _DENSE.value, _CONV.value, _UNET.value, _BLIND.value)
  if "blind_unet" in _TARGETS.value:
    results += check_blind_unet_targets(report, _BLIND_UNET.value, _BLIND_UNET_MIXTURE.value)
  for target, measured, passed in results:
    print(f"{'PASS' if passed else 'FAIL'}  {target}: {measured}")
  sys.exit(0 if all(passed for _, _, passed in results) else 1)


if __name__ == "__main__":
  app.run(main)
