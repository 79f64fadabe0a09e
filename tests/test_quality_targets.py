"""scripts/check_quality_targets.py on synthetic reports: each target passes and fails when it should."""

import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
import check_quality_targets  # pylint: disable=g-import-not-at-top,wrong-import-position

_PSNR = {  # method -> {gaussian level: per-image mean PSNR}
    "dense": {0.2: 21.4, 0.4: 20.2, 0.6: 17.0},
    "blind": {0.2: 23.9, 0.4: 20.0, 0.6: 18.1},
    "conv": {0.2: 23.0, 0.4: 22.4, 0.6: 19.0},
    "unet": {0.2: 26.0, 0.4: 23.1, 0.6: 20.5},
    "wavelet": {0.2: 24.5, 0.4: 19.3, 0.6: 16.5},
}
_RUNS = {"dense": (50, 484_944), "blind": (50, 484_944), "conv": (30, 468_449),
         "unet": (20, 465_953)}


def _report(tmp_path, psnr=None, runs=None):
  psnr, runs = psnr or _PSNR, runs or _RUNS
  models = {name: str(tmp_path / name / "saved_model") for name in runs}
  training_runs = {name: {"epochs": epochs, "num_parameters": parameters}
                   for name, (epochs, parameters) in runs.items()}
  results = {}
  for level in (0.2, 0.4, 0.6):
    best = max(value[level] for name, value in psnr.items() if name not in runs)
    results[str(level)] = {
        "metrics": {name: {"psnr_mean_db": value[level]} for name, value in psnr.items()},
        "margin_over_best_baseline": {
            name: {"best_baseline": "wavelet", "margin_db": psnr[name][level] - best}
            for name in runs}}
  return {
      "reference": {"type": "gaussian", "level": 0.4}, "models": models,
      "training_runs": training_runs,
      "results": {"gaussian": results},
      "representation": {"features": {
          "dense": {"probe_accuracy_noisy": 0.86}, "raw_pixels": {"probe_accuracy_noisy": 0.84}}},
  }


def _check(report):
  return check_quality_targets.check_targets(report, "dense", "conv", "unet", "blind")


def test_all_targets_pass(tmp_path):
  results = _check(_report(tmp_path))
  assert len(results) == 5 and all(passed for _, _, passed in results), results
  assert "22.40 dB after 30 epochs, 468,449 parameters (dense 484,944)" == results[0][1]


def test_each_target_can_fail(tmp_path):
  low_conv = {**_PSNR, "conv": {0.2: 23.0, 0.4: 22.2, 0.6: 19.0}}
  assert [passed for _, _, passed in _check(_report(tmp_path, psnr=low_conv))] == [
      False, True, True, True, True]
  long_unet = {**_RUNS, "unet": (21, 465_953)}
  assert [passed for _, _, passed in _check(_report(tmp_path, runs=long_unet))] == [
      True, False, True, True, True]
  weak_blind = {**_PSNR, "blind": {0.2: 23.9, 0.4: 19.8, 0.6: 18.1}}
  results = _check(_report(tmp_path, psnr=weak_blind))
  assert [passed for _, _, passed in results] == [True, True, True, False, True]
  assert "0.4: -0.40 dB" in results[3][1]
  beaten = {**_PSNR, "wavelet": {0.2: 24.5, 0.4: 20.1, 0.6: 16.5}}
  assert [passed for _, _, passed in _check(_report(tmp_path, psnr=beaten))] == [
      True, True, False, True, True]  # The blind model (20.0 dB) no longer beats 20.1.
  report = _report(tmp_path)
  report["representation"]["features"]["raw_pixels"]["probe_accuracy_noisy"] = 0.9
  assert [passed for _, _, passed in _check(report)][4] is False


def test_a_model_missing_from_the_report_fails_its_targets(tmp_path):
  report = _report(tmp_path)
  report["training_runs"]["unet"] = None
  results = _check(report)
  assert results[1][2] is False and "not measured" in results[1][1]


_LEVELS = {"gaussian": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9),
           "salt_and_pepper": (0.05, 0.1, 0.2, 0.3, 0.5), "masking": (0.1, 0.25, 0.5, 0.75)}
_BLIND_UNETS = ("blind_unet", "blind_unet_mixture")


def _blind_unet_report(margin=1.0, psnr_at_reference=23.0):
  """Every blind U-Net `margin` dB over the best baseline (BM3D) at every level."""
  results = {noise_type: {str(level): {
      "metrics": {name: {"psnr_mean_db": psnr_at_reference} for name in _BLIND_UNETS},
      "margin_over_best_baseline": {name: {"best_baseline": "bm3d", "margin_db": margin}
                                    for name in _BLIND_UNETS}}
      for level in levels} for noise_type, levels in _LEVELS.items()}
  noise = {"type": "gaussian", "factor": 0.4, "factor_range": [0.0, 0.8], "mixture_types": []}
  return {"reference": {"type": "gaussian", "level": 0.4}, "results": results,
          "training_runs": {
              "blind_unet": {"epochs": 20, "num_parameters": 1, "noise": noise},
              "blind_unet_mixture": {"epochs": 20, "num_parameters": 1, "noise": {
                  **noise, "mixture_types": ["gaussian", "salt_and_pepper", "masking"]}}}}


def _check_blind_unets(report):
  return check_quality_targets.check_blind_unet_targets(report, *_BLIND_UNETS)


def test_blind_unet_targets_pass():
  results = _check_blind_unets(_blind_unet_report())
  assert len(results) == 5 and all(passed for _, _, passed in results), results
  assert results[2][1] == "trained on [0, 0.8]; gaussian 0.9: +1.00 vs bm3d"


def test_each_blind_unet_target_can_fail():
  report = _blind_unet_report()
  report["results"]["gaussian"]["0.2"]["margin_over_best_baseline"]["blind_unet"][
      "margin_db"] = -0.1
  assert [passed for _, _, passed in _check_blind_unets(report)] == [
      False, True, True, True, True]
  assert [passed for _, _, passed in _check_blind_unets(
      _blind_unet_report(psnr_at_reference=22.76))] == [True, False, True, True, True]
  report = _blind_unet_report()
  report["results"]["masking"]["0.75"]["margin_over_best_baseline"]["blind_unet_mixture"][
      "margin_db"] = -0.5
  assert [passed for _, _, passed in _check_blind_unets(report)] == [
      True, True, True, False, True]
  report = _blind_unet_report()
  for name in _BLIND_UNETS:
    report["results"]["gaussian"]["0.9"]["margin_over_best_baseline"][name]["margin_db"] = -2.0
  assert [passed for _, _, passed in _check_blind_unets(report)] == [
      True, True, False, True, False]


def test_a_blind_unet_target_without_its_levels_is_not_measured():
  report = _blind_unet_report()
  del report["results"]["gaussian"]["0.9"]  # No level outside the training range [0, 0.8].
  del report["results"]["salt_and_pepper"]["0.3"]
  results = _check_blind_unets(report)
  assert [passed for _, _, passed in results] == [True, True, False, False, False]
  assert "no evaluated level of gaussian is outside blind_unet's training range" in results[2][1]
  assert "salt_and_pepper level(s) 0.3 not in the report" in results[3][1]


_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                       "check_quality_targets.py")


def _run_script(report_flag):
  return subprocess.run([sys.executable, _SCRIPT, report_flag], capture_output=True, text=True,
                        timeout=120, check=False)


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read as JSON \\(FileNotFoundError: No such file or directory\\)"),
    ("", "cannot be read as JSON \\(JSONDecodeError"),
    ("not json{", "cannot be read as JSON \\(JSONDecodeError"),
    ("directory", "cannot be read as JSON \\(IsADirectoryError"),
    ("[]", "is not an evaluation report \\(a JSON object with 'results' and 'reference'\\)"),
    ("{}", "is not an evaluation report"),
    ('{"results": [], "reference": {}}', "is not an evaluation report"),
    ("empty flag", "--report is empty; pass the report.json"),
])
def test_a_report_that_cannot_be_read_is_one_line_and_exit_2(tmp_path, content, message):
  path = tmp_path / "report.json"
  if content == "directory":
    path.mkdir()
  elif content is not None and content != "empty flag":
    path.write_text(content)
  result = _run_script("--report=" if content == "empty flag" else f"--report={path}")
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr and lines[-1].startswith(
      "dae-trainer check_quality_targets: ")
  assert re.search(message, lines[-1]), lines[-1]


def test_a_negative_margin_prints_with_one_sign(tmp_path):
  beaten = {**_PSNR, "wavelet": {0.2: 24.5, 0.4: 25.6, 0.6: 16.5}}
  results = _check(_report(tmp_path, psnr=beaten))
  assert results[2][2] is False
  assert "conv -3.20 dB over wavelet" in results[2][1] and "+-" not in results[2][1]


def test_a_null_or_nan_number_fails_as_not_measured_naming_it(tmp_path):
  report = _report(tmp_path)
  report["results"]["gaussian"]["0.4"]["metrics"]["conv"]["psnr_mean_db"] = None  # NaN, as JSON.
  report["results"]["gaussian"]["0.4"]["margin_over_best_baseline"]["unet"]["margin_db"] = (
      float("nan"))
  results = _check(report)
  assert results[0] == (results[0][0], "not measured (conv's PSNR at gaussian 0.4 is null in the "
                        "report, not a finite number)", False)
  assert results[2][1] == ("not measured (unet's margin over wavelet is NaN in the report, not a "
                           "finite number)") and results[2][2] is False


def test_a_report_lacking_a_section_names_it(tmp_path):
  report = _report(tmp_path)
  del report["representation"]
  assert _check(report)[4][1] == ("not measured (the report has no 'representation' where this "
                                  "target reads it)")
