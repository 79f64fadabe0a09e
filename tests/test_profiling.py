"""The profiler window: it writes a trace of the chosen steps, changes no weight, and a window
that is malformed or outside the run is a one-line config error before training."""

import glob
import json
import os

import pytest
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from xprof.convert import raw_to_tool_data

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


def test_the_window_skips_the_first_chunk_which_compiles(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(profiling.tf.profiler.experimental, "start",
                      lambda logdir: calls.append("start"))
  monkeypatch.setattr(profiling.tf.profiler.experimental, "stop", lambda: calls.append("stop"))
  window = profiling.ProfilerWindow((3, 6), str(tmp_path), enabled=True)
  for first in range(0, 32, 8):
    window.before_chunk(first, 8)
    calls.append(first)
    window.after_chunk(first + 8)
    window.before_chunk(first + 8, 0)  # The end of an epoch.
  assert calls == [0, "start", 8, "stop", 16, 24]


def _step_markers(xplane_path):
  """(step_num, duration in ms) of each "train" step marker in the trace."""
  space = xplane_pb2.XSpace()
  with open(xplane_path, "rb") as file:
    space.ParseFromString(file.read())
  markers = []
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        if plane.event_metadata[event.metadata_id].name == "train":
          stats = {plane.stat_metadata[stat.metadata_id].name: stat.int64_value
                   for stat in event.stats}
          markers.append((stats["step_num"], event.duration_ps / 1e9))
  return markers


def test_the_profile_tab_measures_the_training_steps(config, tmp_path):
  # Asked for steps 0-15: the first chunk (0-7) compiles, so 8-23 are traced.
  config.runtime.profile_steps = (0, 15)
  train.train_and_evaluate(config, str(tmp_path / "workdir"))
  (trace,) = glob.glob(str(tmp_path / "workdir" / "train" / "plugins" / "profile" / "*" /
                           "*.xplane.pb"))
  markers = _step_markers(trace)
  assert [step for step, _ in markers] == [8, 16]
  assert all(milliseconds > 0 for _, milliseconds in markers)
  # What TensorBoard's Profile tab shows: the profile plugin's own conversion.
  overview = json.loads(raw_to_tool_data.xspace_to_tool_data([trace], "overview_page", {})[0])
  step_times = {row["c"][0]["v"]: row["c"][-1]["v"] for row in overview[1]["rows"]}
  assert len(step_times) == 2 and all(time > 0 for time in step_times.values())
  assert float(overview[1]["p"]["steptime_ms_average"]) > 0
  assert "No step time measured" not in overview[1]["p"]["input_conclusion"]
