"""Results that do not depend on the models, kept on disk and reused: the baselines, raw pixels.

A classical baseline's tuned parameters and per-image scores at one (noise
type, level) are a function of the data, the noise and the code alone, so a
second evaluation (another model, the same settings) reads them instead of
recomputing them; so are the raw-pixel representation scores. `Cache` stores
each such result as one entry under the key of exactly those inputs (the
caller builds the key document: see trainer/evaluation/plan.py).

- Location: `<directory>/<kind>/<sha256 of the key>.npz`; the directory is
  `config.cache_dir`, by default `default_directory()`
  (`$XDG_CACHE_HOME/dae-trainer/evaluation`, else `~/.cache/dae-trainer/evaluation`).
  Deleting the directory, or one kind's folder, only costs recomputation.
- Format: an .npz of the result's arrays plus `meta`, a JSON document (the
  format, the whole key document and the result's JSON value) stored as a
  unicode array. Read with `allow_pickle=False`: nothing is ever unpickled.
- A changed input is a changed key, so a stale entry is never read. An entry
  that does not load (truncated, corrupt, another format, another key in it)
  is reported with a warning and recomputed, never used.
- Writes go to a temporary name in the same folder and are renamed into place
  (`os.replace`, atomic), so concurrent evaluations writing the same entry
  leave one complete entry, whichever renamed last; readers never see a
  partial file. A cache that cannot be written is warned about and skipped:
  the evaluation goes on.
"""

import ast
import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import os
import time
import uuid
import zipfile

from absl import logging
import numpy as np


# Bumped when the layout of the entries changes: entries of another format are recomputed.
FORMAT = 1


_META = "meta"
_SUFFIX = ".npz"
# Temporary files of writers that died are removed after this long.
_STALE_TEMPORARY_SECONDS = 3600.0


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "dae-trainer", "evaluation")


def canonical_json(document) -> str:
  """The one JSON text of `document`: sorted keys, no spaces, no NaN."""
  return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def array_digest(*arrays: np.ndarray) -> str:
  """sha256 of the arrays' dtypes, shapes and bytes: equal digests, equal arrays."""
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape};".encode())
    if array.size:  # memoryview cannot cast an empty array (wiener_fit_examples=0's fit images).
      digest.update(memoryview(array).cast("B"))
  return digest.hexdigest()


def _code_only(source: bytes) -> bytes:
  """A Python file's syntax tree without docstrings: its code, whatever its comments and layout."""
  tree = ast.parse(source)
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and (
          isinstance(body[0].value.value, str)):
        node.body = body[1:] or [ast.Pass()]
  return ast.dump(tree).encode()


def source_digest(paths) -> str:
  """sha256 of the named files' code (by base name, in sorted order).

  For Python files, of the code alone: a changed docstring, comment or line
  break keeps the digest (and the cached results); any change to what runs
  changes it.
  """
  digest = hashlib.sha256()
  for path in sorted(set(paths)):
    with open(path, "rb") as file:
      content = file.read()
    if path.endswith(".py"):
      try:
        content = _code_only(content)
      except (SyntaxError, ValueError):
        pass  # Its bytes, then.
    digest.update(f"{os.path.basename(path)}:{len(content)};".encode())
    digest.update(content)
  return digest.hexdigest()


def module_files(module, *attributes) -> list[str]:
  """The source files of `module` and of its named attributes (a stand-in module has no file)."""
  files = [getattr(module, "__file__", None)]
  for attribute in attributes:
    if hasattr(module, attribute):
      files.append(inspect.getsourcefile(getattr(module, attribute)))
  return [path for path in files if path]


def library_versions(distributions) -> dict[str, str | None]:
  """{distribution: installed version, or None if it is not installed}."""
  versions = {}
  for name in distributions:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


@dataclasses.dataclass(frozen=True)
class Entry:
  """One cached result: its JSON value and its arrays."""
  value: dict
  arrays: dict[str, np.ndarray]
  path: str


class Cache:
  """Entries on disk, read and written by kind (e.g. "baseline-bm3d") and key document.

  With `enabled=False` nothing is read or written (every load misses). The
  counters say what happened in this process: `hits`, `misses` (no entry),
  `invalid` (an entry that could not be used) and `stored`.
  """

  def __init__(self, directory: str | None = None, enabled: bool = True):
    self.directory = os.path.abspath(os.path.expanduser(directory or default_directory()))
    self.enabled = enabled
    self.hits = self.misses = self.invalid = self.stored = 0
    self._write_failed = False
    self._swept: set[str] = set()

  def path(self, kind: str, key: dict) -> str:
    name = hashlib.sha256(canonical_json(key).encode()).hexdigest()
    return os.path.join(self.directory, kind, name + _SUFFIX)

  def load(self, kind: str, key: dict, validate=None) -> Entry | None:
    """The entry of `key`, or None (and a warning if there was one that cannot be used).

    `validate(entry)`, if given, raises ValueError for an entry that loads but
    does not hold what the caller needs (e.g. arrays of the wrong length).
    """
    if not self.enabled:
      return None
    path = self.path(kind, key)
    if not os.path.exists(path):
      self.misses += 1
      return None
    try:
      with np.load(path, allow_pickle=False) as contents:
        meta = json.loads(str(contents[_META][()]))
        # Reading every member checks its CRC: a corrupt file fails here.
        arrays = {name: contents[name] for name in contents.files if name != _META}
      if not isinstance(meta, dict):  # Valid JSON, but a list, a number, ...
        raise ValueError(f"its metadata is a JSON {type(meta).__name__}, not an object")
      if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, not {FORMAT}")
      if canonical_json(meta.get("key")) != canonical_json(key):
        raise ValueError("it holds another key")
      if sorted(arrays) != sorted(meta.get("arrays", ())) or not isinstance(meta.get("value"),
                                                                            dict):
        raise ValueError("its arrays or value are not the ones it lists")
      entry = Entry(value=meta["value"], arrays=arrays, path=path)
      if validate is not None:
        validate(entry)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
      self._reject(path, f"{type(error).__name__}: {error}")
      return None
    self.hits += 1
    return entry

  def _reject(self, path: str, reason: str) -> None:
    self.invalid += 1
    logging.warning("Ignoring the unusable cache entry %s (%s); recomputing it.", path,
                    " ".join(str(reason).split())[:300])

  def store(self, kind: str, key: dict, value: dict,
            arrays: dict[str, np.ndarray] | None = None) -> str | None:
    """Writes the entry (temporary name, then an atomic rename); returns its path, or None."""
    if not self.enabled:
      return None
    arrays = dict(arrays or {})
    path = self.path(kind, key)
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
      meta = canonical_json({"format": FORMAT, "key": key, "value": value,
                             "arrays": sorted(arrays)})
      os.makedirs(os.path.dirname(path), exist_ok=True)
      self._sweep(os.path.dirname(path))
      with open(temporary, "wb") as file:
        np.savez(file, **{_META: np.array(meta)}, **arrays)
        file.flush()
        os.fsync(file.fileno())
      os.replace(temporary, path)
    except (OSError, ValueError, TypeError) as error:
      if os.path.exists(temporary):
        os.remove(temporary)
      if not self._write_failed:
        logging.warning("Cannot write to the evaluation cache %s (%s: %s); going on without "
                        "caching (set --config.cache_dir to a writable directory).",
                        self.directory, type(error).__name__, error)
      self._write_failed = True
      return None
    self.stored += 1
    return path

  def _sweep(self, folder: str) -> None:
    """Removes temporary files that writers which died left behind (once per folder)."""
    if folder in self._swept:
      return
    self._swept.add(folder)
    now = time.time()
    for item in os.scandir(folder):
      if ".tmp-" in item.name:
        try:
          if now - item.stat().st_mtime > _STALE_TEMPORARY_SECONDS:
            os.remove(item.path)
        except OSError:
          pass  # Another process removed or renamed it.

  def summary(self) -> dict:
    return {"directory": self.directory, "enabled": self.enabled, "hits": self.hits,
            "misses": self.misses, "invalid": self.invalid, "stored": self.stored}
