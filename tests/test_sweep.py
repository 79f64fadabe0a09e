"""scripts/sweep.py: run selection, command lines, and a real two-run sweep's table."""

import json
import math
import os
import shlex
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.helpers import REPO_ROOT



def test_runs_change_one_thing_from_dense_each():
  names = [name for name, _, _ in sweep.RUNS]
  assert len(names) == len(set(names))
  assert {"dense_latent16", "dense_latent32", "dense", "dense_latent128", "conv", "unet",
          "dense_mse", "dense_salt_and_pepper", "dense_masking"} == set(names)
  for _, config_file, overrides in sweep.RUNS:
    assert os.path.exists(os.path.join(REPO_ROOT, config_file))
    assert len(overrides) <= 2


def test_select_runs():
  assert sweep.select_runs([]) == sweep.RUNS
  assert [name for name, _, _ in sweep.select_runs(["unet", "dense"])] == ["dense", "unet"]
  with pytest.raises(ValueError, match="Unknown run.s. vae in --only; valid runs are dense, "):
    sweep.select_runs(["dense", "vae"])


def test_run_command_overrides_epochs_split_and_the_runs_fields():
  command = sweep.run_command("configs/default.py", {"model.latent_dim": 16}, "/w/r", 3,
                              "train[:50%]")
  assert command[1:] == ["-m", "trainer.main", "--config=configs/default.py", "--workdir=/w/r",
                         "--config.train.num_epochs=3", "--config.train_split=train[:50%]",
                         "--config.model.latent_dim=16"]


def test_markdown_table_formats_missing_values():
  row = {"run": "unet", "model": "unet", "latent_dim": None, "loss": "bce",
         "noise": "gaussian 0.4", "parameters": 465953, "epochs": 1.0, "psnr": 21.234,
         "ssim": 0.8612, "mse": 0.0081, "train_seconds": None}
  table = sweep.markdown_table([row])
  assert table.splitlines()[0].startswith("| run | model | latent_dim |")
  assert "| unet | unet | - | bce | gaussian 0.4 | 465953 | 1.00 | 21.23 | 0.8612 | 0.0081 | - |" \
      in table


@pytest.mark.slow
def test_sweep_trains_runs_and_writes_the_table(tmp_path):
  root = tmp_path / "sweep"
  command = [sys.executable, os.path.join(REPO_ROOT, "scripts", "sweep.py"),
             f"--root={root}", "--only=dense,dense_latent16", "--num_epochs=1",
             "--train_split=train[:1024]"]
  result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads((root / "sweep.json").read_text())
  assert [row["run"] for row in rows] == ["dense", "dense_latent16"]
  assert rows[0]["parameters"] == 484_944 and rows[1]["latent_dim"] == 16
  assert rows[1]["parameters"] < rows[0]["parameters"]
  for row in rows:  # 16 steps: far from trained, but finished and finite.
    assert row["epochs"] == 1.0 and math.isfinite(row["psnr"]) and row["train_seconds"] > 0
  assert "| dense_latent16 | dense | 16 | bce | gaussian 0.4 |" in (root / "sweep.md").read_text()
  assert result.stdout.startswith("| run |")
  # A rerun keeps the finished runs instead of training them again.
  again = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
  assert again.returncode == 0 and "already finished" in again.stderr


@pytest.mark.slow  # A script process that imports TensorFlow: CI runs it in make test-slow.
def test_dry_run_commands_are_quoted_for_a_shell(tmp_path):
  root = str(tmp_path / "x" / "$(touch pwned)")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "scripts", "sweep.py"), f"--root={root}",
       "--only=dense", "--train_split=train[:x] *", "--dry_run"],
      capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  assert result.returncode == 0, result.stderr[-2000:]
  (line,) = result.stdout.strip().splitlines()
  assert shlex.split(line) == sweep.run_command(
      "configs/default.py", {}, os.path.join(root, "dense"), 3, "train[:x] *")
  # Pasted into a shell (with printf for the trainer), it runs nothing from a value.
  words = line.split(" ", 1)[1]
  replayed = subprocess.run(["sh", "-c", f"printf '%s\\n' {words}"], capture_output=True,
                            text=True, check=True, cwd=tmp_path)
  assert replayed.stdout.splitlines() == shlex.split(line)[1:]
  assert not (tmp_path / "pwned").exists()
