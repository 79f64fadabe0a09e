"""The evaluation's progress (trainer/evaluation/progress.py): per-level lines, time left, the bar."""

import io
import logging as std_logging
import re

from absl import logging

from trainer.evaluation import progress as progress_lib


def test_level_lines_say_what_was_done_and_the_time_left(caplog):
  levels = progress_lib.Progress().levels(num_levels=2, total_cost=10.0, later_cost=2.0)
  assert levels.remaining_text() == "time left not known yet"
  levels.work_done(0.5)
  assert levels.remaining_seconds() is None  # Too little done to tell.
  levels.work_done(4.5)
  with caplog.at_level(std_logging.INFO, logger="absl"):
    levels.level_done("gaussian 0.4", 12.3, "models 0.4 s; 8 baselines from the cache")
  # Half of the levels' work done: what is left (5 + 2 later) at the same pace.
  remaining = levels.remaining_seconds()
  assert remaining is not None and remaining > 0
  line = caplog.records[-1].getMessage()
  assert line.startswith("Level 1/2 gaussian 0.4 done in 12.3 s (models 0.4 s; 8 baselines "
                         "from the cache); 0m00s elapsed, about ")
  assert line.endswith(" left.")
  levels.close()


def test_on_a_terminal_a_bar_with_the_log_lines_above_it(monkeypatch):
  terminal = io.StringIO()
  monkeypatch.setattr(progress_lib.sys, "stderr", terminal)
  monkeypatch.setattr(progress_lib, "_is_terminal", lambda stream: True)
  handler = logging.get_absl_handler().python_handler
  original_stream = handler.stream
  levels = progress_lib.Progress().levels(num_levels=3, total_cost=3.0)
  assert handler.stream is not original_stream  # Log lines go through tqdm.write.
  levels.work_done(1.0)
  levels.level_done("masking 0.5", 1.0, "models 0.1 s")
  handler.stream.write("I1203 a log line\n")  # What the absl handler does with a record.
  levels.close()
  assert handler.stream is original_stream
  output = terminal.getvalue()
  assert "masking 0.5  33%|" in output and "1/3 levels" in output
  # The bar is cleared, the line printed, the bar drawn again below it.
  assert re.search(r"33%.*\r\s*\rI1203 a log line\n\rmasking 0.5  33%\|", output, re.DOTALL), output
