"""Sweep: trains a list of short runs and writes one comparison table.

  python scripts/sweep.py --root=sweeps/quick [--num_epochs=3] [--only=dense,conv]
      [--train_split='train[:50%]'] [--dry_run]

The runs answer the tutorial's "next steps": latent size (16/32/64/128), the
model (dense / conv / unet), the loss (bce / mse) and the noise type (gaussian,
salt_and_pepper, masking), each changed alone from the dense baseline. Each run
is `python -m trainer.main` in its own process and workdir under --root, so an
interrupted sweep resumes where it stopped (finished runs are kept, unfinished
ones resume from their checkpoints). The table compares each run's final
evaluation on its own noise (per-image mean PSNR, SSIM, MSE), its parameter
count and its training time; it goes to ROOT/sweep.md and ROOT/sweep.json.

Why this is not a tuning study (scripts/tune.py, docs/cloud.md#hyperparameter-tuning):
a study searches values of one config's fields for the best metric; the sweep is a
fixed ablation whose runs switch config files (conv, unet) or change two fields
together (a noise type and its level), each compared with the baseline on its own
noise, not ranked by one metric.
"""

import json
import os
import shlex
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

from trainer import fileio
from trainer import safe_files
from trainer import workdir as workdir_lib

# The sweep: (run name, config file, overrides). Each run changes one thing
# from "dense" (the tutorial's model, loss and noise), so the rows compare.
RUNS = (
    ("dense", "configs/default.py", {}),
    ("dense_latent16", "configs/default.py", {"model.latent_dim": 16}),
    ("dense_latent32", "configs/default.py", {"model.latent_dim": 32}),
    ("dense_latent128", "configs/default.py", {"model.latent_dim": 128}),
    ("conv", "configs/conv.py", {}),
    ("unet", "configs/unet.py", {}),
    ("dense_mse", "configs/default.py", {"train.loss": "mse"}),
    ("dense_salt_and_pepper", "configs/default.py",
     {"noise.type": "salt_and_pepper", "noise.factor": 0.2}),
    ("dense_masking", "configs/default.py", {"noise.type": "masking", "noise.factor": 0.5}),
)
_RUN_NAMES = tuple(name for name, _, _ in RUNS)
# Config files above are relative to the repository root, where the runs start.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TABLE_COLUMNS = ("run", "model", "latent_dim", "loss", "noise", "parameters", "epochs",
                  "psnr", "ssim", "mse", "train_seconds")

_ROOT = flags.DEFINE_string("root", None, "Directory for the runs' workdirs and the table.")
_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Epochs of every run (short on purpose).")
_TRAIN_SPLIT = flags.DEFINE_string("train_split", "train",
                                   "Training split of every run, e.g. 'train[:50%]'.")
_ONLY = flags.DEFINE_list("only", [], f"Run only these, of: {', '.join(_RUN_NAMES)}.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands; train nothing.")
flags.mark_flag_as_required("root")


def select_runs(only: list[str]) -> tuple:
  """The runs named in `only` (all if empty); ValueError naming unknown names."""
  unknown = sorted(set(only) - set(_RUN_NAMES))
  if unknown:
    raise ValueError(f"Unknown run(s) {', '.join(unknown)} in --only; valid runs are "
                     f"{', '.join(_RUN_NAMES)}.")
  return tuple(run for run in RUNS if not only or run[0] in only)


def run_command(config_file: str, overrides: dict, workdir: str, num_epochs: int,
                train_split: str) -> list[str]:
  """The trainer command line of one run."""
  overrides = {"train.num_epochs": num_epochs, "train_split": train_split, **overrides}
  return [sys.executable, "-m", "trainer.main", f"--config={config_file}",
          f"--workdir={workdir}",
          *(f"--config.{field}={value}" for field, value in overrides.items())]


def summarize_run(name: str, workdir: str) -> dict:
  """One table row from a finished run's config.json, metrics.json and history.json."""
  config, metrics, history = (
      fileio.read_json(os.path.join(workdir, name)) for name in (
          workdir_lib.CONFIG_FILENAME, workdir_lib.METRICS_FILENAME, workdir_lib.HISTORY_FILENAME))
  noise = config["noise"]
  return {
      "run": name,
      "model": config["model"]["type"],
      "latent_dim": config["model"]["latent_dim"] if config["model"]["type"] != "unet" else None,
      "loss": config["train"]["loss"],
      "noise": f"{noise['type']} {noise['factor']}",
      "parameters": metrics.get("num_parameters"),
      "epochs": metrics["epochs"],
      "psnr": metrics["psnr"],
      "ssim": metrics["ssim"],
      "mse": metrics["mse"],
      "train_seconds": history[-1].get("elapsed_seconds") if history else None,
  }


def _cell(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
  return str(value)


def markdown_table(rows: list[dict]) -> str:
  """The comparison table; psnr is the per-image mean PSNR in dB on the run's eval noise."""
  lines = ["| " + " | ".join(_TABLE_COLUMNS) + " |",
           "|" + "---|" * len(_TABLE_COLUMNS)]
  lines += ["| " + " | ".join(_cell(row[column]) for column in _TABLE_COLUMNS) + " |"
            for row in rows]
  return "\n".join(lines) + "\n"


def _is_finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, "metrics.json"))


def main(argv):
  del argv
  try:
    runs = select_runs(_ONLY.value)
  except ValueError as error:
    sys.exit(f"sweep: {error}")
  rows = []
  for name, config_file, overrides in runs:
    workdir = os.path.join(os.path.abspath(_ROOT.value), name)
    command = run_command(config_file, overrides, workdir, _NUM_EPOCHS.value, _TRAIN_SPLIT.value)
    if _DRY_RUN.value:
      # Quoted for a POSIX shell: a pasted command runs nothing from a value
      # (a root with `$(...)`, a split like train[:x] that would glob).
      print(shlex.join(command))
      continue
    if _is_finished(workdir):
      logging.info("%s: already finished in %s.", name, workdir)
    else:
      logging.info("%s: training (%s).", name, shlex.join(command[1:]))
      result = subprocess.run(command, check=False, cwd=_REPOSITORY)
      if result.returncode != 0:
        sys.exit(f"sweep: run {name} failed with exit code {result.returncode}; see its log "
                 f"above, fix it and rerun the same command (finished runs are kept).")
    rows.append(summarize_run(name, workdir))
  if _DRY_RUN.value:
    return
  table = markdown_table(rows)
  root = os.path.abspath(_ROOT.value)
  # Atomic, and never through a link planted in the root (trainer/safe_files.py).
  safe_files.write_atomically(os.path.join(root, "sweep.json"),
                              json.dumps(rows, indent=2).encode())
  safe_files.write_atomically(
      os.path.join(root, "sweep.md"),
      (f"Sweep: {_NUM_EPOCHS.value} epochs on {_TRAIN_SPLIT.value}; psnr is the per-image "
       "mean PSNR (dB) on each run's own evaluation noise.\n\n" + table).encode())
  print(table, end="")


if __name__ == "__main__":
  app.run(main)
