"""Benchmark: this trainer against the tutorial's way of training, side by side, as numbers.

  python scripts/benchmark.py --config=configs/default.py [--config.runtime.jit_compile=true]
      [--num_epochs=3] [--num_workers=2] [--time_to_quality]

Measures in one process, same machine, same model and batch, and prints a
table, then one JSON object as the last line:
(a) the tutorial's way: keras.Model.fit on numpy arrays with noise drawn once;
(b) this trainer's training loop with the given config;
(a) and (b) alternate, --num_epochs each, for --rounds rounds (their order
swapping every round), and each is reported as its median round: on a shared
machine their rates drift by 10-30% from minute to minute, so only
measurements taken side by side compare;
(c) the trainer's input pipeline alone;
(d) a large float32 matmul: this machine's practical FLOP/s ceiling;
(e) one evaluation pass over the eval split, and its share of an epoch.
Neither (a) nor (b) evaluates per epoch. With --num_workers=N > 1, (b) again as
N local worker processes (multi_worker_mirrored).

  python scripts/benchmark.py --config=configs/<config>.py --time_to_quality
      [--target_psnr=23.0] [--rounds=3]

measures time to quality instead, as MLPerf times training: in each round the
tutorial (always the tutorial's dense model, whatever --config trains) trains
its 50 epochs, and this trainer trains --config (evaluating every epoch, as it
always does) until its mean test PSNR first reaches --target_psnr (default: the
tutorial's own test PSNR, measured in the same round), with
`train.stop_at_eval_psnr` ending the run there. It prints each round's wall
times and their ratio, then one JSON object with the median ratio. With a
fixed --target_psnr the two sides alternate which goes first, as (a) and (b) do.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from configs import default as default_config
from input_pipeline import noise
from trainer.benchmarking import harness
from trainer.benchmarking import tutorial
from trainer import cli
from trainer import errors
from trainer.cloud import local_cluster
from trainer import models
from trainer import resources
from trainer import train
from trainer import validation
from trainer import run_files

_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Epochs to time for each measurement.")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 3, "Rounds of (a) and (b) alternating; each is reported as its median round.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 1, "If > 1, also time training as a job of this many local worker processes.")
_DATA_SERVICE_WORKERS = flags.DEFINE_integer(
    "data_service_workers", 0,
    "If > 0, also time (c) through a local tf.data service dispatcher with this many "
    "workers (in this process). Off by default: TensorFlow's tf.data service listens on "
    "every network interface, without credentials, while it runs.")
_TIME_TO_QUALITY = flags.DEFINE_bool(
    "time_to_quality", False,
    "Measure time to quality instead: the tutorial's 50 epochs against this trainer until "
    "it first reaches --target_psnr, for --rounds rounds; report both wall times.")
_TARGET_PSNR = flags.DEFINE_float(
    "target_psnr", None,
    "With --time_to_quality: the mean test PSNR (dB) the trainer trains to; default: the "
    "tutorial's own test PSNR after its 50 epochs.")
_TUTORIAL_EPOCHS = flags.DEFINE_integer("tutorial_epochs", 50,
                                        "Epochs of the tutorial in --time_to_quality.")
_TRAINING_ONLY = flags.DEFINE_bool(
    "training_only", False, "Time (b) only and print it as JSON (the worker processes' mode).")
config_flags.DEFINE_config_file("config", "configs/default.py", "Configuration file.",
                                lock_config=True)


def _local_workers(num_workers: int) -> float:
  """(b) in `num_workers` worker processes of this script; returns the chief's examples/s."""
  flags_through = [arg for arg in sys.argv[1:] if not arg.startswith(
      ("--num_workers", "--training_only", "--time_to_quality"))]
  command = [sys.executable, os.path.abspath(__file__), *flags_through, "--training_only",
             "--config.runtime.strategy=multi_worker_mirrored"]
  processes = [subprocess.Popen(command, env=dict(os.environ, TF_CONFIG=tf_config),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for tf_config in local_cluster.tf_configs(num_workers)]
  outputs = [process.communicate() for process in processes]
  for index, (process, (_, stderr)) in enumerate(zip(processes, outputs, strict=True)):
    if process.returncode:
      raise RuntimeError(f"benchmark worker {index} failed: {stderr.strip()[-2000:]}")
  return json.loads(outputs[0][0].strip().splitlines()[-1])["trainer_examples_per_sec"]


def _tutorial_round(data, seed: int) -> tuple[float, float]:
  """The tutorial's own run: its 50 epochs' wall time and its final mean test PSNR.

  Always the tutorial itself (configs/default.py's dense model, batch and
  noise), whatever model and batch --config trains.
  """
  tutorial_config = default_config.get_config()
  noisy_train, clean_train = tutorial.tutorial_arrays(
      data, data.train_split, tutorial_config.noise.factor, seed)
  noisy_test, clean_test = tutorial.tutorial_arrays(
      data, data.eval_split, tutorial_config.noise.factor, seed + 1)
  model = tutorial.tutorial_model(tutorial_config.model, data.image_shape, seed)
  _, seconds = tutorial.time_tutorial_fit(model, noisy_train, clean_train,
                                          tutorial_config.train.batch_size,
                                          _TUTORIAL_EPOCHS.value - 1)
  return seconds, tutorial.mean_psnr(clean_test, model.predict(noisy_test, verbose=0))


def _trainer_round(config, target_psnr: float) -> dict:
  """This trainer on `config` until its eval PSNR first reaches `target_psnr`.

  The seconds are the run's own `elapsed_seconds` at that evaluation (training
  and every evaluation so far; not building the model or the final export).
  """
  config = config.copy_and_resolve_references()
  config.train.stop_at_eval_psnr = target_psnr
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    history = run_files.load_history(workdir)
  reached = [entry for entry in history if entry["eval_psnr"] >= target_psnr]
  return {
      "seconds": reached[0]["elapsed_seconds"] if reached else None,
      "epochs": reached[0]["epoch"] if reached else None,
      "best_psnr": max(entry["eval_psnr"] for entry in history),
      "trained_seconds": history[-1]["elapsed_seconds"],
      # (epoch, seconds, eval PSNR) of every evaluation: the run's quality against time.
      "curve": [(entry["epoch"], round(entry["elapsed_seconds"], 1), round(entry["eval_psnr"], 3))
                for entry in history],
  }


def _time_to_quality(data, config, num_rounds: int) -> dict:
  """Rounds of (the tutorial's 50 epochs, the trainer to the target); the median ratio."""
  rounds = []
  for round_index in range(num_rounds):
    # With a fixed target the trainer goes first every other round, so that
    # neither side always follows the other; a target that is the tutorial's
    # PSNR needs the tutorial first.
    trainer_first = round_index % 2 == 1 and _TARGET_PSNR.value is not None
    if not trainer_first:
      tutorial_seconds, tutorial_psnr = _tutorial_round(data, config.seed)
    target = _TARGET_PSNR.value if _TARGET_PSNR.value is not None else tutorial_psnr
    trainer = _trainer_round(config, target)
    if trainer_first:
      tutorial_seconds, tutorial_psnr = _tutorial_round(data, config.seed)
    rounds.append({
        "tutorial_seconds": tutorial_seconds, "tutorial_test_psnr": tutorial_psnr,
        "target_psnr": target,
        "trainer_seconds_to_target": trainer["seconds"],
        "trainer_epochs_to_target": trainer["epochs"],
        "trainer_best_psnr": trainer["best_psnr"],
        "trainer_seconds_trained": trainer["trained_seconds"],
        "trainer_curve": trainer["curve"],
        "ratio": (trainer["seconds"] / tutorial_seconds if trainer["seconds"] is not None
                  else None),
    })
    logging.info("time to quality, round %d: %s", round_index + 1, rounds[-1])
  ratios = [entry["ratio"] for entry in rounds]
  return {
      "config": {"model": config.model.type, "batch_size": config.train.batch_size,
                 "num_epochs": config.train.num_epochs},
      "tutorial_epochs": _TUTORIAL_EPOCHS.value,
      "target_psnr": rounds[0]["target_psnr"],
      "target_is_tutorial_psnr": _TARGET_PSNR.value is None,
      "rounds": rounds,
      "tutorial_seconds": statistics.median(entry["tutorial_seconds"] for entry in rounds),
      "trainer_seconds_to_target": (None if None in ratios else statistics.median(
          entry["trainer_seconds_to_target"] for entry in rounds)),
      # Median of the rounds' ratios; None if any round never reached the target.
      "time_to_quality_ratio": None if None in ratios else statistics.median(ratios),
      "peak_rss_mb": resources.peak_rss_mb(),
      "machine": harness.machine_description(),
  }


def _print_time_to_quality(results) -> None:
  for index, entry in enumerate(results["rounds"], start=1):
    line = (f"round {index}: tutorial {entry['tutorial_seconds']:.0f} s "
            f"({results['tutorial_epochs']} epochs, {entry['tutorial_test_psnr']:.2f} dB); ")
    if entry["ratio"] is None:
      print(line + f"trainer never reached {entry['target_psnr']:.2f} dB (best "
            f"{entry['trainer_best_psnr']:.2f} dB in {entry['trainer_seconds_trained']:.0f} s)")
    else:
      print(line + f"trainer {entry['trainer_seconds_to_target']:.0f} s to "
            f"{entry['target_psnr']:.2f} dB (epoch {entry['trainer_epochs_to_target']}): "
            f"ratio {entry['ratio']:.2f}")


def _print_table(results) -> None:
  rounds = results["rounds"]
  rows = [
      (f"(a) tutorial: Model.fit, noise drawn once (median of {rounds})",
       results["tutorial_examples_per_sec"]),
      (f"(b) trainer: {results['strategy']}, jit_compile={results['jit_compile']} (median)",
       results["trainer_examples_per_sec"]),
      ("(c) input pipeline alone", results["pipeline_examples_per_sec"]),
  ]
  for name, rate in results["pipeline_examples_per_sec_by_generator"].items():
    core_us = results["pipeline_core_us_per_example_by_generator"][name]
    rows.append((f"(c) alone, noise.generator={name}: {core_us:.2f} core us/example", rate))
  if "data_service_examples_per_sec" in results:
    rows.append((f"(c) via a tf.data service, {results['data_service_workers']} local workers",
                 results["data_service_examples_per_sec"]))
  if "multi_worker_examples_per_sec" in results:
    rows.append((f"(b) as {results['num_workers']} local worker processes",
                 results["multi_worker_examples_per_sec"]))
  print(f"{'measurement':<60} {'examples/s':>12}")
  for name, value in rows:
    print(f"{name:<60} {value:>12,.0f}")
  print("rounds, (b)/(a): " + ", ".join(
      f"{trainer:,.0f}/{tutorial:,.0f} = {trainer / tutorial:.2f}x" for trainer, tutorial in zip(
          results["trainer_examples_per_sec_by_round"],
          results["tutorial_examples_per_sec_by_round"], strict=True)))
  print(f"(d) float32 matmul ceiling: {results['matmul_flops_per_sec'] / 1e9:.1f} GFLOP/s; "
        f"training at {results['model_flops_per_example'] / 1e6:.2f} MFLOP per example uses "
        f"{results['flops_utilization']:.0%} of it")
  print(f"(e) one evaluation pass: {results['eval_seconds']:.2f} s, "
        f"{results['eval_share_of_epoch']:.0%} of an epoch with evaluation")
  print(f"speedup vs tutorial {results['speedup_vs_tutorial']:.2f}x, pipeline / trainer "
        f"{results['pipeline_over_trainer']:.1f}x, peak RSS {results['peak_rss_mb']:.0f} MiB")


def _checked_setup(config):
  """(strategy, data source) of `config`, checked and built as a training run builds them."""
  validation.validate_config(config)
  return train.create_strategy_and_data(config)


def main(argv):
  del argv
  config = flags.FLAGS.config
  num_epochs, num_rounds = _NUM_EPOCHS.value, _ROUNDS.value
  if num_epochs < 1 or num_rounds < 1:
    raise app.UsageError(f"--num_epochs={num_epochs} and --rounds={num_rounds} must both be "
                         ">= 1, e.g. --num_epochs=3 --rounds=3.")
  target_psnr = _TARGET_PSNR.value
  if target_psnr is not None and not (math.isfinite(target_psnr) and target_psnr > 0):
    # Checked before the tutorial's minutes of training, not after them.
    raise errors.ConfigError(f"--target_psnr={target_psnr} must be a number of dB > 0, e.g. "
                             "--target_psnr=23.0 (or leave it out: the tutorial's own PSNR).")
  strategy, data = _checked_setup(config)
  if _TIME_TO_QUALITY.value:
    results = _time_to_quality(data, config, num_rounds)
    _print_time_to_quality(results)
    print(json.dumps(results, sort_keys=True))
    return
  trainer = harness.TrainingLoop(strategy, data, config, num_epochs * num_rounds)
  if _TRAINING_ONLY.value:
    trainer_rate = statistics.median(
        trainer.examples_per_second(num_epochs) for _ in range(num_rounds))
    print(json.dumps({"trainer_examples_per_sec": trainer_rate}))
    return

  noisy, clean = tutorial.tutorial_arrays(data, data.train_split, config.noise.factor,
                                          config.seed)
  tutorial_fit = tutorial.TutorialFit(
      tutorial.tutorial_model(config.model, data.image_shape, config.seed), noisy, clean,
      config.train.batch_size)
  tutorial_rates, trainer_rates = [], []
  for round_index in range(num_rounds):
    # The tutorial goes first every other round: neither side always follows the other.
    tutorial_first = round_index % 2 == 1
    if tutorial_first:
      tutorial_rates.append(tutorial_fit.examples_per_second(num_epochs))
    trainer_rates.append(trainer.examples_per_second(num_epochs))
    if not tutorial_first:
      tutorial_rates.append(tutorial_fit.examples_per_second(num_epochs))
  del trainer, tutorial_fit  # Frees the trainer's shuffle buffer and prefetched batches before (c).
  tutorial_rate = statistics.median(tutorial_rates)
  trainer_rate = statistics.median(trainer_rates)
  pipeline_by_generator = harness.time_input_pipeline_by_generator(data, config, num_epochs)
  pipeline_rate, pipeline_core_us = pipeline_by_generator[noise.generator(config.noise)]
  eval_seconds = harness.time_evaluation(strategy, data, config)
  epoch_seconds = data.steps_per_epoch * config.train.batch_size / trainer_rate
  ceiling = harness.matmul_flops_per_second()
  flops = harness.training_flops_per_example(
      models.create_model(config.model, data.image_shape, config.seed))
  results = {
      "config": {"model": config.model.type, "batch_size": config.train.batch_size},
      "strategy": config.runtime.strategy,
      "jit_compile": config.runtime.jit_compile,
      "replicas": strategy.num_replicas_in_sync,
      "timed_epochs": num_epochs,
      "rounds": num_rounds,
      "tutorial_examples_per_sec_by_round": tutorial_rates,
      "trainer_examples_per_sec_by_round": trainer_rates,
      "speedup_vs_tutorial_by_round": [trainer / tutorial for trainer, tutorial in zip(
          trainer_rates, tutorial_rates, strict=True)],
      "per_epoch_evaluation": False,
      "tutorial_examples_per_sec": tutorial_rate,
      "trainer_examples_per_sec": trainer_rate,
      "pipeline_examples_per_sec": pipeline_rate,
      # CPU time of the process per example while the training pipeline runs alone.
      "pipeline_core_us_per_example": pipeline_core_us,
      # The same for each noise.generator the config's noise can use (the config's own included).
      "pipeline_examples_per_sec_by_generator": {
          name: rate for name, (rate, _) in pipeline_by_generator.items()},
      "pipeline_core_us_per_example_by_generator": {
          name: core_us for name, (_, core_us) in pipeline_by_generator.items()},
      "speedup_vs_tutorial": trainer_rate / tutorial_rate,
      "pipeline_over_trainer": pipeline_rate / trainer_rate,
      "model_flops_per_example": flops,
      "matmul_flops_per_sec": ceiling,
      "flops_utilization": trainer_rate * flops / ceiling,
      "eval_seconds": eval_seconds,
      # The share of an epoch (training plus one evaluation) that evaluating takes.
      "eval_share_of_epoch": eval_seconds / (eval_seconds + epoch_seconds),
  }
  if _DATA_SERVICE_WORKERS.value > 0:
    results["data_service_workers"] = _DATA_SERVICE_WORKERS.value
    (results["data_service_examples_per_sec"],
     results["data_service_core_us_per_example"]) = harness.time_data_service_pipeline(
         data, config, num_epochs, _DATA_SERVICE_WORKERS.value)
  if _NUM_WORKERS.value > 1:
    results["num_workers"] = _NUM_WORKERS.value
    results["multi_worker_examples_per_sec"] = _local_workers(_NUM_WORKERS.value)
  results["peak_rss_mb"] = resources.peak_rss_mb()
  results["machine"] = harness.machine_description()
  _print_table(results)
  print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
  # A missing --config file, a misspelled --config.* override or a bad value: one line.
  cli.run(main)
