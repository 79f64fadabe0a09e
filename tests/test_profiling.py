"""The profiler window: it writes a trace of the chosen steps, changes no weight, and a window
that is malformed or outside the run is a one-line config error before training."""

import glob
import os

import pytest

from trainer import checkpoints
from trainer import errors
from trainer import profiling
from trainer import train


@pytest.mark.slow  # A traced run: CI runs it in make test-slow.
def test_a_window_writes_a_trace_and_leaves_the_weights_unchanged(config, tmp_path):
  plain = train.train_and_evaluate(config, str(tmp_path / "plain"))
  config.runtime.profile_steps = (8, 15)
  profiled = train.train_and_evaluate(config, str(tmp_path / "profiled"))
  traces = glob.glob(str(tmp_path / "profiled" / "train" / "plugins" / "profile" / "*" /
                         "*.xplane.pb"))
  assert traces and all(os.path.getsize(trace) > 0 for trace in traces)
  assert not glob.glob(str(tmp_path / "plain" / "**" / "*.xplane.pb"), recursive=True)
  assert checkpoints.weights_fingerprint(profiled) == checkpoints.weights_fingerprint(plain)


@pytest.mark.parametrize("window, message", [
    ((20, 40), "ends after the run's last step 31"),
    ((9, 3), "0 <= first <= last"),
    ((5,), "must be two global steps"),
])
def test_a_bad_window_is_rejected_before_training(config, tmp_path, window, message):
  config.runtime.profile_steps = window
  with pytest.raises(errors.ConfigError, match=message) as error:
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "workdir" / "history.json")


@pytest.mark.parametrize("value, expected", [
    ((), None), ("", None), ("(100, 110)", (100, 110)), ((3, 3), (3, 3))])
def test_parse_profile_steps(value, expected):
  assert profiling.parse_profile_steps(value) == expected


def test_parse_rejects_a_string_that_is_not_a_pair():
  with pytest.raises(ValueError, match="runtime.profile_steps='100-110'"):
    profiling.parse_profile_steps("100-110")


def test_the_window_is_rounded_out_to_whole_chunks(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(profiling.tf.profiler.experimental, "start",
                      lambda logdir: calls.append(("start", logdir)))
  monkeypatch.setattr(profiling.tf.profiler.experimental, "stop",
                      lambda: calls.append(("stop",)))
  window = profiling.ProfilerWindow((10, 17), str(tmp_path), enabled=True)
  for first in range(0, 40, 8):  # Chunks of 8 steps: 0-7, 8-15, 16-23, ...
    window.before_chunk(first, 8)
    calls.append(("chunk", first))
    window.after_chunk(first + 8)
  assert calls == [("chunk", 0), ("start", str(tmp_path)), ("chunk", 8), ("chunk", 16),
                   ("stop",), ("chunk", 24), ("chunk", 32)]
