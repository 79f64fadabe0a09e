"""How long `python -m trainer.evaluate` takes: once with an empty baseline cache, once warm.

  python scripts/benchmark_evaluation.py [--workdir=W1 --workdir=W2] [--cache_dir=DIR]
      [-- --config.levels.gaussian=0.4, ...]

Runs the evaluation twice, each as its own `python -m trainer.evaluate`
process, with the default config (configs/evaluate.py) and whatever
`--config.*` overrides follow `--`:
(1) the first model with an empty cache (a fresh temporary directory, or
    --cache_dir): every baseline is tuned and run;
(2) a second, different model with the cache (1) filled: only the model is
    scored.
Without --workdir, the models are two untrained dense autoencoders of
configs/default.py (seeds 0 and 1): a trained model costs the evaluation the
same time (its weights do not change the work), so nothing is trained. With
--workdir (twice, or once for both runs) their saved_model/ are evaluated.

Prints, for each run, its wall time, the baseline results computed and read
from the cache and the slowest stages, whether the two runs' baseline numbers
agree exactly, the load average and the cores, then one JSON object as the
last line. The machine's load changes the times: say it with them.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", [], "Workdirs trained by trainer.main: the first for run (1), the second (or the "
    "first again) for run (2). Default: two untrained dense models.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "The baseline cache for both runs; it should start empty (default: a "
    "new temporary directory).")
_OUTPUT_ROOT = flags.DEFINE_string(
    "output_root", None, "Where the two reports (first/, second/) and the models go "
    "(default: a new temporary directory).")

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export_untrained_models(root: str) -> list[str]:
  """Two untrained dense models of configs/default.py (seeds 0 and 1); their saved_model paths."""
  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, _REPOSITORY)
  from configs import default as default_config
  from input_pipeline import data_source
  from trainer import export
  from trainer import models
  paths = []
  for seed in (0, 1):
    path = os.path.join(root, f"dense_seed{seed}", "saved_model")
    if not os.path.exists(path):
      model = models.create_model(default_config.get_config().model, data_source.IMAGE_SHAPE,
                                  seed=seed)
      export.export_saved_model(model, path)
    paths.append(path)
  return paths


def _evaluate(name: str, saved_model: str, output_dir: str, cache_dir: str,
              overrides: list[str]) -> dict:
  """One `python -m trainer.evaluate` run: its wall seconds, report and load averages."""
  command = [sys.executable, "-m", "trainer.evaluate", f"--saved_model={name}={saved_model}",
             f"--output_dir={output_dir}", f"--config.cache_dir={cache_dir}", *overrides]
  print("$ " + " ".join(command), flush=True)
  load_before = os.getloadavg()
  start = time.perf_counter()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [_REPOSITORY, *filter(None, [os.environ.get("PYTHONPATH")])]))
  os.makedirs(output_dir, exist_ok=True)
  log_path = os.path.join(output_dir, "evaluate.log")
  print(f"  (its log: {log_path})", flush=True)
  with open(log_path, "w", encoding="utf-8") as log:
    returncode = subprocess.run(command, cwd=_REPOSITORY, env=env, check=False,
                                stderr=log).returncode
  seconds = time.perf_counter() - start
  with open(log_path, encoding="utf-8") as log:
    stderr = log.read()
  if returncode:
    sys.exit(f"benchmark_evaluation: the {name} evaluation failed:\n{stderr[-3000:]}")
  with open(os.path.join(output_dir, "report.json"), encoding="utf-8") as file:
    report = json.load(file)
  progress = [line for line in stderr.splitlines() if " done in " in line]
  return {"seconds": seconds, "report": report, "load_before": load_before,
          "load_after": os.getloadavg(), "level_lines": progress}


def _baseline_numbers(report: dict) -> dict:
  return {(noise_type, key, name): (result["metrics"][name], result["baselines"][name]["params"])
          for noise_type, by_level in report["results"].items()
          for key, result in by_level.items() for name in result["baselines"]}


def _summary(label: str, run: dict) -> dict:
  report = run["report"]
  cache = report["baseline_cache"]
  stages = sorted(report["timings_seconds"].items(), key=lambda item: -item[1])[:5]
  print(f"{label}: {run['seconds']:.0f} s wall; {cache['computed']} baseline results computed, "
        f"{cache['from_cache']} from the cache; raw pixels from the cache: "
        f"{report['representation'].get('raw_pixels_from_cache')}; {report['workers']} workers; "
        f"load average {run['load_before'][0]:.1f} before, {run['load_after'][0]:.1f} after")
  print("  slowest stages: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages))
  if run["level_lines"]:
    print("  last progress line: " + run["level_lines"][-1].split("] ", 1)[-1])
  return {"seconds": round(run["seconds"], 1), "computed": cache["computed"],
          "from_cache": cache["from_cache"], "workers": report["workers"],
          "load_average_before": round(run["load_before"][0], 2),
          "load_average_after": round(run["load_after"][0], 2)}


def main(argv):
  overrides = argv[1:]
  root = _OUTPUT_ROOT.value or tempfile.mkdtemp(prefix="benchmark_evaluation_")
  if _WORKDIR.value:
    workdirs = (_WORKDIR.value * 2)[:2]
    saved_models = [os.path.join(workdir.rstrip("/"), "saved_model") for workdir in workdirs]
  else:
    saved_models = _export_untrained_models(os.path.join(root, "models"))
  cache_dir = _CACHE_DIR.value or tempfile.mkdtemp(prefix="evaluation_cache_")
  if os.path.isdir(cache_dir) and os.listdir(cache_dir):
    print(f"warning: {cache_dir} is not empty: run (1) may read results from it.")
  first = _evaluate("first", saved_models[0], os.path.join(root, "first"), cache_dir, overrides)
  second = _evaluate("second", saved_models[1], os.path.join(root, "second"), cache_dir,
                     overrides)
  summary = {
      "cores": len(os.sched_getaffinity(0)),
      "overrides": overrides,
      "first_empty_cache": _summary("(1) empty cache", first),
      "second_warm_cache": _summary("(2) another model, warm cache", second),
      "baselines_identical": _baseline_numbers(first["report"])
                             == _baseline_numbers(second["report"]),
      "reports": root,
      "cache_dir": cache_dir,
  }
  print(f"baseline numbers identical in both runs: {summary['baselines_identical']}")
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
