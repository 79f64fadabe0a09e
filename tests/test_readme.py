"""README.md and docs/*.md stay true to the repository: short, with links, files and commands that exist.

Only the code in the markdown (fenced and indented blocks, `inline spans`) is read
for commands, so prose never counts as one. Nothing here trains or runs a command:
it checks what the commands name (config files and fields, modules, scripts, make
targets), fast.
"""

import functools
import glob
import importlib.util
import os
import re
import runpy

import pytest
from tests.helpers import REPO_ROOT

_README = os.path.join(REPO_ROOT, "README.md")
_MARKDOWN_FILES = [_README] + sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
MAX_README_LINES = 250

_FENCED_BLOCK = re.compile(r"^ *```[^\n]*\n(.*?)^ *```[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_CONFIG_FILE = re.compile(r"(?:--config|\bCONFIG)=[\"']?([\w./-]+\.py)\b")
_OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)=")
_MODULE = re.compile(r"\bpython(?:3(?:\.\d+)?)?\s+-m\s+([A-Za-z_][\w.]*)")
_SCRIPT = re.compile(r"\bscripts/[\w./-]*[\w-]")
_MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:[A-Z_]+=\S*\s+)*)([a-z][\w.-]*)")
_DEFAULT_CONFIG = "configs/default.py"
_EVALUATE_CONFIG = "configs/evaluate.py"


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _name(path: str) -> str:
  return os.path.relpath(path, REPO_ROOT)


def _split_code(text: str) -> tuple[list[str], str]:
  """(the code chunks of a markdown text, the text without them)."""
  chunks = [match.group(1) for match in _FENCED_BLOCK.finditer(text)]
  text = _FENCED_BLOCK.sub("\n", text)
  # Indented code blocks: lines indented by 4+ spaces after a blank line, until a line is not.
  prose, block, previous_blank = [], None, True
  for line in text.split("\n"):
    if block is not None and (line.startswith("    ") or not line.strip()):
      block.append(line)
      continue
    if block is not None:
      chunks.append("\n".join(block))
      block = None
    if previous_blank and line.startswith("    ") and line.strip():
      block = [line]
    else:
      prose.append(line)
    previous_blank = not line.strip()
  if block is not None:
    chunks.append("\n".join(block))
  prose_text = "\n".join(prose)
  chunks += [match.group(2).replace("\n", " ") for match in _INLINE_CODE.finditer(prose_text)]
  return chunks, _INLINE_CODE.sub(" ", prose_text)


def _command_lines(path: str) -> list[str]:
  """Every line of code in the markdown file, continuation lines joined, comments dropped."""
  chunks, _ = _split_code(_read(path))
  lines = []
  for chunk in chunks:
    for line in re.sub(r"\\\n\s*", " ", chunk).split("\n"):
      line = re.sub(r"(^|\s)#.*$", "", line).strip()
      if line:
        lines.append(line)
  return lines


def _heading_anchors(path: str) -> set[str]:
  """GitHub's anchors of the headings of a markdown file."""
  _, prose = _split_code(_read(path))
  anchors = set()
  for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.MULTILINE):
    title = re.sub(r"[^\w\- ]", "", match.group(1).lower())
    anchors.add(title.replace(" ", "-"))
  return anchors


@functools.lru_cache(maxsize=None)
def _config(path: str):
  return runpy.run_path(os.path.join(REPO_ROOT, path))["get_config"]()


def _has_field(config, field: str) -> bool:
  node = config
  for part in field.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def _makefile_targets() -> set[str]:
  targets = set()
  for line in _read(os.path.join(REPO_ROOT, "Makefile")).split("\n"):
    match = re.match(r"^([\w.-][\w.\s-]*?)\s*::?(?!=)", line)
    if match and not match.group(1).startswith("."):
      targets.update(match.group(1).split())
  return targets


def test_readme_is_short():
  num_lines = len(_read(_README).splitlines())
  assert num_lines <= MAX_README_LINES, (
      f"README.md has {num_lines} lines, more than {MAX_README_LINES}: move details to docs/")


def test_the_markdown_files_are_found():
  names = [_name(path) for path in _MARKDOWN_FILES]
  assert "README.md" in names and "docs/architecture.md" in names, names


@pytest.mark.parametrize("path", _MARKDOWN_FILES, ids=_name)
def test_relative_links_point_to_existing_files(path):
  _, prose = _split_code(_read(path))
  broken = []
  for target in _LINK.findall(prose):
    if _SCHEME.match(target) or target.startswith("#"):
      continue
    file_part = target.split("#", 1)[0]
    if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), file_part))):
      broken.append(target)
  assert not broken, f"{_name(path)} links to missing files: {broken}"


@pytest.mark.parametrize("path", _MARKDOWN_FILES, ids=_name)
def test_link_anchors_name_headings(path):
  _, prose = _split_code(_read(path))
  broken = []
  for target in _LINK.findall(prose):
    if _SCHEME.match(target) or "#" not in target:
      continue
    file_part, anchor = target.split("#", 1)
    linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
    if linked.endswith(".md") and os.path.exists(linked) and anchor not in _heading_anchors(linked):
      broken.append(target)
  assert not broken, f"{_name(path)} links to missing headings: {broken}"


def test_readme_config_files_exist():
  named = {match for line in _command_lines(_README) for match in _CONFIG_FILE.findall(line)}
  assert named, "README.md names no --config=configs/X.py"
  missing = sorted(path for path in named if not os.path.isfile(os.path.join(REPO_ROOT, path)))
  assert not missing, f"README.md names config files that do not exist: {missing}"


def _config_of(line: str) -> str:
  """The config file a command line's --config.* overrides apply to."""
  named = _CONFIG_FILE.findall(line)
  if named:
    return named[-1]
  if "trainer.evaluate" in line:
    return _EVALUATE_CONFIG
  return _DEFAULT_CONFIG


def test_readme_overrides_name_existing_fields():
  unknown, checked = [], 0
  for line in _command_lines(_README):
    for field in _OVERRIDE.findall(line):
      config_file = _config_of(line)
      checked += 1
      if not _has_field(_config(config_file), field):
        unknown.append(f"--config.{field} (of {config_file}) in: {line}")
  assert checked, "README.md has no --config.a.b=value override"
  assert not unknown, "README.md overrides fields that do not exist:\n" + "\n".join(unknown)


@pytest.mark.parametrize("path", _MARKDOWN_FILES, ids=_name)
def test_python_modules_resolve(path):
  modules = {match.rstrip(".") for line in _command_lines(path)
             for match in _MODULE.findall(line)}
  missing = sorted(module for module in modules if importlib.util.find_spec(module) is None)
  assert not missing, f"{_name(path)} runs modules that do not resolve: {missing}"


@pytest.mark.parametrize("path", _MARKDOWN_FILES, ids=_name)
def test_scripts_exist(path):
  named = set(_SCRIPT.findall(_read(path)))
  missing = sorted(script for script in named
                   if not os.path.exists(os.path.join(REPO_ROOT, script)))
  assert not missing, f"{_name(path)} names scripts that do not exist: {missing}"


@pytest.mark.parametrize("path", _MARKDOWN_FILES, ids=_name)
def test_make_targets_exist(path):
  targets = _makefile_targets()
  named = {match[1] for line in _command_lines(path) for match in _MAKE.findall(line)}
  if path == _README:
    assert {"install", "train", "test", "test-slow"} <= named, sorted(named)
  missing = sorted(named - targets)
  assert not missing, f"{_name(path)} names make targets the Makefile lacks: {missing}"


def test_the_checks_see_the_commands():
  """The parsing itself: a command split over lines is one command, comments are not code."""
  lines = _command_lines(_README)
  assert any("trainer.main" in line and "--config.noise.factor=" in line for line in lines)
  assert not any(line.startswith("#") for line in lines)
  assert "test-slow" in _makefile_targets() and "benchmark" in _makefile_targets()
