"""The evaluation's result cache (trainer/evaluation/cache.py): keys, corrupt entries, concurrency.

The evaluations that use it (a second run reads every baseline, a changed
level or seed recomputes, a truncated entry is recomputed) are in
tests/test_evaluation.py, next to the models they score.
"""

import logging as std_logging
import multiprocessing
import os

import numpy as np
import pytest

from trainer.evaluation import cache as cache_lib

KEY = {"kind": "baseline", "baseline": "median", "noise": {"type": "gaussian", "level": 0.4,
                                                          "seed": 0}}
VALUE = {"params": {"size": 3, "black_level": 0.25}, "tuning_psnr_db": 17.25}


def _arrays(size=1000, seed=0):
  rng = np.random.default_rng(seed)
  return {"psnr_db": rng.normal(size=size), "outputs": rng.uniform(size=(4, 28, 28, 1)).astype(
      np.float32)}


def _entry_files(directory):
  return sorted(os.path.relpath(os.path.join(root, name), directory)
                for root, _, names in os.walk(directory) for name in names)


def test_an_entry_comes_back_exactly(tmp_path):
  cache = cache_lib.Cache(str(tmp_path))
  arrays = _arrays()
  assert cache.load("baseline-median", KEY) is None
  path = cache.store("baseline-median", KEY, VALUE, arrays)
  assert path == cache.path("baseline-median", KEY)
  assert path.startswith(str(tmp_path / "baseline-median")) and path.endswith(".npz")
  entry = cache_lib.Cache(str(tmp_path)).load("baseline-median", KEY)
  assert entry.value == VALUE
  assert sorted(entry.arrays) == sorted(arrays)
  for name, array in arrays.items():
    np.testing.assert_array_equal(entry.arrays[name], array)
    assert entry.arrays[name].dtype == array.dtype
  assert (cache.misses, cache.stored) == (1, 1)
  # Never pickle: the file loads with pickling refused.
  with np.load(path, allow_pickle=False) as contents:
    assert set(contents.files) == {"meta", *arrays}


def test_any_change_to_the_key_is_another_entry(tmp_path):
  cache = cache_lib.Cache(str(tmp_path))
  cache.store("baseline-median", KEY, VALUE, _arrays())
  changed = [dict(KEY, baseline="wavelet"), dict(KEY, noise=dict(KEY["noise"], level=0.5)),
             dict(KEY, noise=dict(KEY["noise"], seed=1)), dict(KEY, extra=None)]
  paths = {cache.path("baseline-median", key) for key in [KEY, *changed]}
  assert len(paths) == len(changed) + 1
  for key in changed:
    assert cache.load("baseline-median", key) is None
  # The key's order of fields does not matter: canonical JSON.
  assert cache.load("baseline-median", dict(reversed(list(KEY.items())))) is not None


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "flip_byte"])
def test_a_damaged_entry_is_reported_and_never_used(tmp_path, caplog, damage):
  cache = cache_lib.Cache(str(tmp_path))
  path = cache.store("baseline-median", KEY, VALUE, _arrays())
  with open(path, "rb") as file:
    content = file.read()
  if damage == "truncate":
    content = content[:len(content) // 2]
  elif damage == "empty":
    content = b""
  elif damage == "garbage":
    content = b"not an npz file at all" * 10
  else:  # One byte inside the psnr_db array: its CRC no longer matches.
    index = content.index(b"psnr_db.npy") + 200
    content = content[:index] + bytes([content[index] ^ 0xFF]) + content[index + 1:]
  with open(path, "wb") as file:
    file.write(content)
  with caplog.at_level(std_logging.WARNING):
    assert cache.load("baseline-median", KEY) is None
  assert cache.invalid == 1
  assert "unusable cache entry" in caplog.text and path in caplog.text
  # Recomputed and stored again, it is good.
  cache.store("baseline-median", KEY, VALUE, _arrays())
  assert cache.load("baseline-median", KEY).value == VALUE


def test_an_entry_of_another_format_or_key_is_not_used(tmp_path, caplog, monkeypatch):
  cache = cache_lib.Cache(str(tmp_path))
  monkeypatch.setattr(cache_lib, "FORMAT", 0)
  path = cache.store("baseline-median", KEY, VALUE, _arrays())
  monkeypatch.setattr(cache_lib, "FORMAT", 1)
  with caplog.at_level(std_logging.WARNING):
    assert cache.load("baseline-median", KEY) is None
  assert "format 0, not 1" in caplog.text
  # A file under another key's name (copied by hand, say) holds its own key.
  other = dict(KEY, baseline="wavelet")
  os.replace(cache.store("baseline-median", other, VALUE, _arrays()), path)
  assert cache.load("baseline-median", KEY) is None
  assert "another key" in caplog.text
  assert cache.invalid == 2


def test_the_caller_can_reject_an_entry_that_loads(tmp_path, caplog):
  cache = cache_lib.Cache(str(tmp_path))
  cache.store("baseline-median", KEY, VALUE, _arrays(size=10))

  def validate(entry):
    if entry.arrays["psnr_db"].shape != (1000,):
      raise ValueError("its psnr_db is not 1000 values")

  with caplog.at_level(std_logging.WARNING):
    assert cache.load("baseline-median", KEY, validate) is None
  assert "its psnr_db is not 1000 values" in caplog.text
  assert (cache.hits, cache.invalid) == (0, 1)


def test_a_disabled_cache_reads_and_writes_nothing(tmp_path):
  cache_lib.Cache(str(tmp_path)).store("baseline-median", KEY, VALUE, _arrays())
  before = _entry_files(tmp_path)
  cache = cache_lib.Cache(str(tmp_path), enabled=False)
  assert cache.load("baseline-median", KEY) is None
  assert cache.store("baseline-median", dict(KEY, baseline="x"), VALUE, _arrays()) is None
  assert _entry_files(tmp_path) == before
  assert cache.summary()["enabled"] is False


def test_an_unwritable_cache_warns_once_and_the_evaluation_goes_on(tmp_path, caplog):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  cache = cache_lib.Cache(str(blocker / "cache"))
  with caplog.at_level(std_logging.WARNING):
    assert cache.store("baseline-median", KEY, VALUE, _arrays()) is None
    assert cache.store("baseline-wavelet", KEY, VALUE, _arrays()) is None
  assert caplog.text.count("Cannot write to the evaluation cache") == 1
  assert cache.load("baseline-median", KEY) is None


def test_the_default_directory_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert cache_lib.default_directory() == str(tmp_path / "dae-trainer" / "evaluation")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert cache_lib.Cache().directory == str(tmp_path / "home" / ".cache" / "dae-trainer" /
                                            "evaluation")


def test_digests_tell_arrays_apart():
  values = np.arange(12, dtype=np.float32)
  digests = {cache_lib.array_digest(array) for array in (
      values, values.reshape(3, 4), values.astype(np.float64), values + 1, values[::-1].copy())}
  assert len(digests) == 5
  assert cache_lib.array_digest(values) == cache_lib.array_digest(values.copy())
  assert cache_lib.array_digest(values[::2]) == cache_lib.array_digest(values[::2].copy())


def _write_repeatedly(directory, seed, start, rounds):
  """One 'evaluation' storing the same entry again and again (in its own process)."""
  cache = cache_lib.Cache(directory)
  arrays = _arrays(size=200_000, seed=0)  # 1.6 MB: the writes take long enough to overlap.
  start.wait()
  for _ in range(rounds):
    cache.store("baseline-median", KEY, dict(VALUE, writer=seed), arrays)


def _read_repeatedly(directory, start, rounds, failures):
  cache = cache_lib.Cache(directory)
  start.wait()
  for _ in range(rounds):
    cache.load("baseline-median", KEY)
  failures.value = cache.invalid


def test_evaluations_writing_the_same_entry_at_once_leave_one_valid_entry(tmp_path):
  context = multiprocessing.get_context("spawn")
  start = context.Barrier(3)
  failures = context.Value("i", -1)
  processes = [context.Process(target=_write_repeatedly, args=(str(tmp_path), seed, start, 20))
               for seed in (1, 2)]
  processes.append(context.Process(target=_read_repeatedly,
                                   args=(str(tmp_path), start, 200, failures)))
  for process in processes:
    process.start()
  for process in processes:
    process.join(timeout=120)
    assert process.exitcode == 0
  # The reader never met a partial entry; one complete entry is left, no temporary file.
  assert failures.value == 0
  assert _entry_files(tmp_path) == [os.path.relpath(
      cache_lib.Cache(str(tmp_path)).path("baseline-median", KEY), tmp_path)]
  entry = cache_lib.Cache(str(tmp_path)).load("baseline-median", KEY)
  assert entry.value["writer"] in (1, 2)
  np.testing.assert_array_equal(entry.arrays["psnr_db"], _arrays(size=200_000)["psnr_db"])


def test_temporary_files_of_dead_writers_are_swept(tmp_path):
  cache = cache_lib.Cache(str(tmp_path))
  folder = tmp_path / "baseline-median"
  folder.mkdir()
  old, recent = folder / "x.npz.tmp-1-aaaa", folder / "y.npz.tmp-2-bbbb"
  for path in (old, recent):
    path.write_bytes(b"partial")
  os.utime(old, (0, 0))
  cache.store("baseline-median", KEY, VALUE, _arrays())
  assert not old.exists() and recent.exists()  # A recent one may be another writer's.


def test_the_code_digest_follows_the_code_not_its_comments(tmp_path):
  path = tmp_path / "baseline.py"

  def digest(source):
    path.write_text(source)
    return cache_lib.source_digest([str(path)])

  original = digest('"""Doc."""\n\ndef f(x):\n  """Doc."""\n  return x + 1  # One.\n')
  assert original == digest('"""Other doc."""\n\n\ndef f(x):\n  # A comment.\n  return x + 1\n')
  assert original != digest('"""Doc."""\n\ndef f(x):\n  return x + 2\n')
  assert original != digest('"""Doc."""\n\ndef f(y):\n  return y + 1\n')


@pytest.mark.parametrize("meta", ["[1, 2]", "42", '"text"', "null"])
def test_metadata_of_the_wrong_json_type_is_recomputed_with_a_warning(tmp_path, caplog, meta):
  cache = cache_lib.Cache(str(tmp_path))
  path = cache.store("baseline-median", KEY, VALUE, _arrays())
  with open(path, "wb") as file:  # Valid JSON, not an object (issue 25, item 6).
    np.savez(file, meta=np.array(meta), **_arrays())
  with caplog.at_level(std_logging.WARNING):
    assert cache.load("baseline-median", KEY) is None
  assert cache.invalid == 1
  assert "not an object" in caplog.text and path in caplog.text


def test_an_empty_array_has_a_digest():
  # wiener_fit_examples=0 (no wiener) leaves the fit images empty; they are digested all the same.
  empty = np.zeros((0, 28, 28, 1), np.float32)
  assert cache_lib.array_digest(empty) == cache_lib.array_digest(empty.copy())
  assert cache_lib.array_digest(empty) != cache_lib.array_digest(np.zeros((0, 28, 28), np.float32))
