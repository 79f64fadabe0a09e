"""The report's files: report.json, report.md (tables), plots and TensorBoard runs.

Each file is written to a temporary name and renamed, so a report directory
never holds a half-written file.
"""

import math
import os
import tempfile

import tensorflow as tf

from input_pipeline import storage
from trainer import errors
from trainer import fileio
from trainer import plots
from trainer import safe_files
from trainer import summaries
from trainer.evaluation import plan
from trainer.evaluation import scoring


REPORT_JSON = "report.json"


REPORT_MD = "report.md"


TENSORBOARD_DIRNAME = "tensorboard"


def _methods(report: dict) -> list[str]:
  return [*report["models"], *report["baselines"]]


def _method_label(report: dict, method: str) -> str:
  subset = report["slow_baselines"].get(method)
  if subset is not None and subset < report["dataset"]["num_examples"]:
    return f"{method} (first {subset} images)"
  return method


def _number(value, digits: int) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _headline_table(report: dict) -> list[str]:
  reference = report["reference"]
  result = report["results"][reference["type"]][plan.level_key(reference["level"])]
  lines = [
      f"## Headline: {reference['type']} noise {plan.level_key(reference['level'])}, "
      f"{result['num_examples']} test images",
      "",
      "| method | kind | PSNR mean (dB) | PSNR pooled (dB) | SSIM | BCE | MSE | "
      "margin over the best baseline (dB) | parameters | epochs |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  runs = report.get("training_runs", {})
  for method in _methods(report):
    scores = result["metrics"][method]
    margin = result["margin_over_best_baseline"].get(method)
    margin_text = "" if method not in report["models"] else (
        "n/a (no baseline)" if margin is None else
        f"{margin['margin_db']:+.2f} vs {margin['best_baseline']}"
        + (f" (first {margin['num_examples']} images)"
           if margin["num_examples"] < result["num_examples"] else ""))
    kind = "model" if method in report["models"] else "baseline"
    lines.append(
        f"| {_method_label(report, method)} | {kind} | {_number(scores['psnr_mean_db'], 2)} | "
        f"{_number(scores['psnr_pooled_db'], 2)} | {_number(scores['ssim'], 3)} | "
        f"{_number(scores['bce'], 4)} | {_number(scores['mse'], 5)} | {margin_text} | "
        f"{_run_field(runs.get(method), 'num_parameters')} | "
        f"{_run_field(runs.get(method), 'epochs')} |")
  if "subset" in result:
    subset = result["subset"]
    side_by_side = ", ".join(
        f"{method} {subset['metrics'][method]['psnr_mean_db']:.2f}"
        for method in _methods(report))
    lines += ["", f"On the first {subset['num_examples']} images (where the slow baselines "
              f"ran), PSNR mean (dB): {side_by_side}."]
  return lines


def _model_source(report: dict, name: str) -> str:
  """`path`, with the step and weights fingerprint the export records."""
  run = report.get("training_runs", {}).get(name) or {}
  recorded = [f"step {run['step']}" if run.get("step") is not None else "",
              f"weights {run['weights_fingerprint']}" if run.get("weights_fingerprint") else ""]
  return ", ".join([report["models"][name], *filter(None, recorded)])


def _run_field(run: dict | None, field: str) -> str:
  value = (run or {}).get(field)
  return "" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _level_tables(report: dict) -> list[str]:
  lines = []
  for noise_type, by_level in report["results"].items():
    keys = list(by_level)
    lines += ["", f"## PSNR mean (dB) against the {noise_type} noise level", "",
              "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method in _methods(report):
      cells = [_number(by_level[key]["metrics"][method]["psnr_mean_db"], 2) for key in keys]
      lines.append(f"| {_method_label(report, method)} | " + " | ".join(cells) + " |")
  return lines


def _representation_table(report: dict) -> list[str]:
  result = report["representation"]
  if "skipped" in result:
    return ["", "## Representation", "", f"Skipped: {result['skipped']}."]
  lines = [
      "", "## Representation", "",
      f"{result['protocol']}; {result['num_train_examples']} training images "
      f"({result['train_split']}), {result['num_test_examples']} test images, noise "
      f"{result['noise']['type']} {plan.level_key(result['noise']['level'])}.", "",
      "| features | dim | probe accuracy clean | probe accuracy noisy | k-means accuracy clean "
      "| k-means NMI clean | k-means accuracy noisy | k-means NMI noisy |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for name, scores in result["features"].items():
    lines.append(f"| {name} | {scores['dim']} | " + " | ".join(
        _number(scores[field], 3) for field in (
            "probe_accuracy_clean", "probe_accuracy_noisy", "kmeans_accuracy_clean",
            "kmeans_nmi_clean", "kmeans_accuracy_noisy", "kmeans_nmi_noisy")) + " |")
  return lines


def format_markdown(report: dict) -> str:
  """report.md: the headline table, one PSNR table per noise type, the representation table."""
  splits = report["dataset"]["splits"]
  lines = [
      "# Denoising evaluation", "",
      f"Dataset {report['dataset']['name']}, test images: {splits['test']} "
      f"({report['dataset']['num_examples']} images). Models: "
      + ", ".join(f"{name} ({_model_source(report, name)})" for name in report["models"])
      + ".", "",
      "Notes:",
      "- Every method is scored on the same noisy test images: one fixed, seeded draw per "
      "noise type and level.",
      f"- Baselines are tuned on {splits['tuning']} and the Wiener filter fitted on "
      f"{splits['wiener_fit']}, training images held out from the test set; their chosen "
      "parameters are in report.json.",
      f"- PSNR mean: {scoring.PSNR_CONVENTIONS['psnr_mean_db']}. PSNR pooled: "
      f"{scoring.PSNR_CONVENTIONS['psnr_pooled_db']}. The mean is never below the pooled value.",
      "- Margin over the best baseline: the model's PSNR mean minus that of the baseline "
      "closest to it, each baseline compared on the images it denoised.",
  ]
  for name, run in report.get("training_runs", {}).items():
    if (run or {}).get("trainer_pid"):
      lines.append(f"- {name}'s workdir was being trained (PID {run['trainer_pid']}) during this "
                   "evaluation: its last complete export was scored.")
  for name, subset in report["slow_baselines"].items():
    if subset < report["dataset"]["num_examples"]:
      lines.append(f"- {name} is slow: it denoised only the first {subset} test images.")
  lines += ["", *_headline_table(report), *_level_tables(report), *_representation_table(report)]
  cache = report.get("baseline_cache") or {}
  reused = (f"; {cache.get('computed', 0)} baseline results computed and "
            f"{cache.get('from_cache', 0)} read from the cache" if cache.get("enabled") else
            "; the baseline cache was off")
  wall = report.get("wall_seconds")
  total = sum(seconds for seconds in report["timings_seconds"].values())
  lines += ["", (f"The evaluation took {wall:.0f} s" if wall is not None else
                 f"Stages took {total:.0f} s in all") + f"{reused} (each stage's seconds, in "
            "this process or a worker's, are in report.json's timings_seconds). "
            "TensorBoard: one run per method, tags `<type>/<metric>`, step = noise level x 1000.",
            ""]
  return "\n".join(lines)


def _tensorboard_step(level: float) -> int:
  return int(round(level * 1000))


def _write_tensorboard(report: dict, examples: dict, directory: str) -> None:
  """One run per method (tags <type>/<metric>, step = level x 1000); example grids at the root."""
  representation_features = report["representation"].get("features", {})
  writers = {method: tf.summary.create_file_writer(os.path.join(directory, method))
             for method in dict.fromkeys((*_methods(report), *representation_features))}
  root = tf.summary.create_file_writer(directory)
  for noise_type, by_level in report["results"].items():
    for result in by_level.values():
      step = _tensorboard_step(result["level"])
      for method, scores in result["metrics"].items():
        summaries.write_scalars(writers[method], {
            f"{noise_type}/{name}": scores[name] for name in scoring.METRICS}, step)
  for method, scores in representation_features.items():
    summaries.write_scalars(writers[method], {
        f"representation/{name}": value for name, value in scores.items() if name != "dim"}, 0)
  for noise_type, example in examples.items():
    summaries.write_images(
        root, f"examples/{noise_type}",
        plots.image_rows_grid([images for _, images in example["rows"]]),
        _tensorboard_step(example["level"]))
    with root.as_default():
      tf.summary.text(f"examples/{noise_type}/rows",
                      " / ".join(title for title, _ in example["rows"]),
                      step=_tensorboard_step(example["level"]))
  for writer in (*writers.values(), root):
    writer.close()


def check_writable(output_dir: str) -> None:
  """EvaluationError unless a directory can be made where `output_dir` goes (local paths).

  `workdir_lib.check_workdir` asks `os.access`, which says yes to root even where
  nothing can be created (e.g. /proc); so a directory is made and removed
  again in the nearest existing parent, before any work.
  """
  if storage.is_remote(output_dir):
    return  # workdir_lib.check_workdir wrote and removed a small file there.
  existing = os.path.abspath(output_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".dae-trainer-write-check-", dir=existing))
  except OSError as error:
    raise errors.EvaluationError(
        f"--output_dir={output_dir} cannot be written ({errors.describe(error)}); choose "
        "another --output_dir or fix its permissions.") from error


def write_outputs(report: dict, examples: dict, output_dir: str) -> None:
  """Writes the plots, TensorBoard events, report.json and report.md (last) to `output_dir`."""
  tf.io.gfile.makedirs(output_dir)
  written = set()
  for noise_type, by_level in report["results"].items():
    series = {_method_label(report, method): (
        [result["level"] for result in by_level.values()],
        [result["metrics"][method]["psnr_mean_db"] for result in by_level.values()])
              for method in _methods(report)}
    name = f"psnr_vs_level_{noise_type}.png"
    plots.plot_lines(
        series, f"{noise_type} noise level", "PSNR, mean over images (dB)",
        f"Denoising under {noise_type} noise ({report['dataset']['num_examples']} test images)",
        os.path.join(output_dir, name),
        dashed={_method_label(report, method) for method in report["baselines"]})
    written.add(name)
  for noise_type, example in examples.items():
    name = f"examples_{noise_type}.png"
    plots.plot_image_rows(example["rows"], os.path.join(output_dir, name),
                            title=f"{noise_type} noise {plan.level_key(example['level'])}")
    written.add(name)
  # Plots of noise types this run did not evaluate would contradict report.json.
  for pattern in ("psnr_vs_level_*.png", "examples_*.png"):
    for path in tf.io.gfile.glob(os.path.join(output_dir, pattern)):
      if os.path.basename(path) not in written:
        tf.io.gfile.remove(path)
  # Events of an earlier evaluation would mix with these: the directory is replaced whole.
  tensorboard_dir = os.path.join(output_dir, TENSORBOARD_DIRNAME)
  temporary = f"{tensorboard_dir}.tmp-{os.getpid()}"
  if tf.io.gfile.exists(temporary):
    safe_files.remove_tree(temporary)
  _write_tensorboard(report, examples, temporary)
  fileio.replace_directory(temporary, tensorboard_dir)
  fileio.write_json(os.path.join(output_dir, REPORT_JSON), report)
  fileio.write_text(os.path.join(output_dir, REPORT_MD), format_markdown(report))
