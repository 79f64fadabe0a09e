"""The study file: what to tune, read once and checked before any trial starts.

A study file is YAML whose fields are a Vertex AI HyperparameterTuningJob's
(camelCase, as `gcloud ai hp-tuning-jobs create --config` reads them) minus its
trial job, plus a `trainer` section saying what every trial trains:

    displayName: dense-lr-latent
    studySpec:
      metrics: [{metricId: psnr, goal: MAXIMIZE}]
      parameters:
        - parameterId: train.learning_rate        # a field of configs/default.py
          doubleValueSpec: {minValue: 0.0001, maxValue: 0.01}
          scaleType: UNIT_LOG_SCALE
        - parameterId: model.latent_dim
          discreteValueSpec: {values: [16, 32, 64, 128]}
      algorithm: RANDOM_SEARCH                     # or GRID_SEARCH, ALGORITHM_UNSPECIFIED
    maxTrialCount: 6
    parallelTrialCount: 2
    trainer:
      config: configs/default.py
      overrides: {train.num_epochs: 2}

Parameter ids are trainer config fields. The local runner
(`trainer.tuning.local`) and `scripts/vertex_job.py --study` both read it
with `load_study`; every mistake is one `errors.StudyError` line naming the value
and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import runpy
from typing import Any

import yaml

from trainer import config_lib
from trainer import errors
from trainer.cloud import hypertune

_JOB_KEYS = {"displayName", "studySpec", "maxTrialCount", "parallelTrialCount",
             "maxFailedTrialCount", "trainer"}
_STUDY_KEYS = {"metrics", "parameters", "algorithm", "measurementSelectionType"}
_TRAINER_KEYS = {"config", "overrides"}
_VALUE_SPECS = {"doubleValueSpec": "double", "integerValueSpec": "integer",
                "discreteValueSpec": "discrete", "categoricalValueSpec": "categorical"}
_PARAMETER_KEYS = {"parameterId", "scaleType", *_VALUE_SPECS}
ALGORITHMS = ("ALGORITHM_UNSPECIFIED", "RANDOM_SEARCH", "GRID_SEARCH")
SCALE_TYPES = ("UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE")
MEASUREMENT_SELECTIONS = ("LAST_MEASUREMENT", "BEST_MEASUREMENT")
GOALS = ("MAXIMIZE", "MINIMIZE")
DEFAULT_CONFIG = "configs/default.py"


@dataclasses.dataclass(frozen=True)
class Parameter:
  """One tuned config field.

  Attributes:
    id: the config field, e.g. train.learning_rate.
    kind: double, integer, discrete or categorical.
    bounds: (min, max) for double and integer, else None.
    values: the allowed values for discrete and categorical, else ().
    log_scale: UNIT_LOG_SCALE.
  """
  id: str
  kind: str
  bounds: tuple[float, float] | None
  values: tuple
  log_scale: bool


@dataclasses.dataclass(frozen=True)
class Study:
  """A checked study file."""
  display_name: str
  metric: str
  goal: str
  parameters: tuple[Parameter, ...]
  algorithm: str
  measurement_selection: str
  max_trial_count: int
  parallel_trial_count: int
  max_failed_trial_count: int
  config_file: str
  overrides: dict[str, Any]
  # The studySpec as written (camelCase), for the Vertex AI job.
  study_spec: dict[str, Any]

  def trainer_args(self) -> list[str]:
    """The trainer flags every trial shares: the config, its overrides, the reported metric."""
    return [f"--config={self.config_file}",
            *(f"--config.{name}={value}" for name, value in self.overrides.items()),
            f"--config.runtime.hypertune_metric={self.metric}"]


def _fail(where: str, message: str) -> None:
  raise errors.StudyError(f"{where}: {message}")


def _mapping(value, where: str, allowed: set[str]) -> dict:
  if not isinstance(value, dict):
    _fail(where, f"expected a mapping, got {value!r}")
  unknown = sorted(set(value) - allowed)
  if unknown:
    _fail(where, f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
  return value


def _count(job: dict, key: str, default: int | None, minimum: int) -> int:
  value = job.get(key, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(key, f"{value!r} must be an integer >= {minimum}")
  return value


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_parameter(spec, index: int) -> Parameter:
  where = f"studySpec.parameters[{index}]"
  spec = _mapping(spec, where, _PARAMETER_KEYS)
  parameter_id = spec.get("parameterId")
  if not isinstance(parameter_id, str) or not parameter_id or any(c.isspace() for c in parameter_id):
    # Vertex AI's rule (StudySpec.ParameterSpec.parameter_id): no whitespace.
    _fail(where, f"parameterId {parameter_id!r} must be a config field such as train.learning_rate")
  where = f"parameter {parameter_id}"
  kinds = [key for key in _VALUE_SPECS if key in spec]
  if len(kinds) != 1:
    _fail(where, f"give exactly one of {', '.join(_VALUE_SPECS)} (got {len(kinds)})")
  kind = _VALUE_SPECS[kinds[0]]
  value_spec = _mapping(spec[kinds[0]], f"{where} {kinds[0]}",
                        {"values"} if kind in ("discrete", "categorical")
                        else {"minValue", "maxValue"})
  scale = spec.get("scaleType", "UNIT_LINEAR_SCALE")
  if kind == "categorical" and "scaleType" in spec:
    _fail(where, "a categorical parameter takes no scaleType; remove it")
  if scale not in SCALE_TYPES:
    _fail(where, f"scaleType {scale!r} is not supported here; use one of {', '.join(SCALE_TYPES)}")
  bounds, values = None, ()
  if kind in ("double", "integer"):
    low, high = value_spec.get("minValue"), value_spec.get("maxValue")
    wanted = int if kind == "integer" else (int, float)
    for name, value in (("minValue", low), ("maxValue", high)):
      if not _is_number(value) or not isinstance(value, wanted):
        # YAML 1.1 reads 1e-4 as a string: the usual cause.
        _fail(where, f"{kinds[0]}.{name} {value!r} is not {'an integer' if kind == 'integer' else 'a number'}"
              + (" (YAML reads 1e-4 as text; write 0.0001 or 1.0e-4)"
                 if isinstance(value, str) else ""))
    if not low < high:
      _fail(where, f"minValue {low} must be below maxValue {high}")
    bounds = (low, high)
  else:
    values = value_spec.get("values")
    if not isinstance(values, list) or not values or len(set(values)) != len(values):
      _fail(where, f"{kinds[0]}.values must be a non-empty list of distinct values, got {values!r}")
    check = _is_number if kind == "discrete" else (lambda value: isinstance(value, str))
    bad = [value for value in values if not check(value)]
    if bad:
      _fail(where, f"{kinds[0]}.values {bad!r} are not "
            f"{'numbers' if kind == 'discrete' else 'strings (quote them)'}")
    values = tuple(sorted(values) if kind == "discrete" else values)
  log_scale = scale == "UNIT_LOG_SCALE"
  if log_scale and (bounds or values)[0] <= 0:
    _fail(where, "UNIT_LOG_SCALE needs values > 0; raise the minimum or use UNIT_LINEAR_SCALE")
  return Parameter(parameter_id, kind, bounds, values, log_scale)


def parse_study(job: dict) -> Study:
  """A `Study` from the file's content; errors.StudyError on anything it cannot run."""
  job = _mapping(job, "the study file", _JOB_KEYS)
  study_spec = _mapping(job.get("studySpec"), "studySpec", _STUDY_KEYS)
  metrics = study_spec.get("metrics")
  if not isinstance(metrics, list) or len(metrics) != 1:
    _fail("studySpec.metrics", f"give exactly one metric, e.g. [{{metricId: psnr, goal: MAXIMIZE}}], "
          f"got {metrics!r}")
  metric = _mapping(metrics[0], "studySpec.metrics[0]", {"metricId", "goal"})
  if metric.get("metricId") not in hypertune.METRIC_GOALS:
    _fail("studySpec.metrics[0]", f"metricId {metric.get('metricId')!r} is not an eval metric "
          f"the trainer produces; use one of {', '.join(hypertune.METRIC_GOALS)}")
  if metric.get("goal") not in GOALS:
    _fail("studySpec.metrics[0]", f"goal {metric.get('goal')!r} must be MAXIMIZE or MINIMIZE")
  parameters = study_spec.get("parameters")
  if not isinstance(parameters, list) or not parameters:
    _fail("studySpec.parameters", "list at least one parameter")
  parameters = tuple(_parse_parameter(spec, index) for index, spec in enumerate(parameters))
  ids = [parameter.id for parameter in parameters]
  if len(set(ids)) != len(ids):
    _fail("studySpec.parameters", f"parameter ids must be unique: {ids}")
  algorithm = study_spec.get("algorithm", "ALGORITHM_UNSPECIFIED")
  if algorithm not in ALGORITHMS:
    _fail("studySpec.algorithm", f"{algorithm!r} must be one of {', '.join(ALGORITHMS)}")
  if algorithm == "GRID_SEARCH" and any(parameter.kind == "double" for parameter in parameters):
    _fail("studySpec.algorithm", "GRID_SEARCH needs INTEGER, DISCRETE or CATEGORICAL parameters "
          "only (as on Vertex AI); use discreteValueSpec for the doubles")
  selection = study_spec.get("measurementSelectionType", "LAST_MEASUREMENT")
  if selection not in MEASUREMENT_SELECTIONS:
    _fail("studySpec.measurementSelectionType",
          f"{selection!r} must be one of {', '.join(MEASUREMENT_SELECTIONS)}")
  trainer = _mapping(job.get("trainer", {}), "trainer", _TRAINER_KEYS)
  overrides = _mapping(trainer.get("overrides", {}) or {}, "trainer.overrides",
                       set(trainer.get("overrides", {}) or {}))
  clash = sorted(set(overrides) & set(ids) | {"runtime.hypertune_metric"} & set(overrides))
  if clash:
    _fail("trainer.overrides", f"{', '.join(clash)} is set by the study itself; remove it there")
  return Study(
      display_name=str(job.get("displayName", "dae-trainer-study")),
      metric=metric["metricId"], goal=metric["goal"], parameters=parameters,
      algorithm=algorithm, measurement_selection=selection,
      max_trial_count=_count(job, "maxTrialCount", None, 1),
      parallel_trial_count=_count(job, "parallelTrialCount", 1, 1),
      max_failed_trial_count=_count(job, "maxFailedTrialCount", 0, 0),
      config_file=str(trainer.get("config", DEFAULT_CONFIG)), overrides=dict(overrides),
      study_spec=study_spec)


def load_study(path: str) -> Study:
  """Reads and checks the study file at `path` (its values against the trainer's config too)."""
  try:
    with open(path) as file:
      content = yaml.safe_load(file)
  except OSError as error:
    raise errors.StudyError(f"cannot read the study file {path} ({error.strerror})") from error
  except yaml.YAMLError as error:
    raise errors.StudyError(f"{path} is not valid YAML ({' '.join(str(error).split())})") from error
  return parse_study(content)


def _field_type(value) -> type:
  return type(value) if isinstance(value, (bool, int, float, str)) else tuple


def check_against_config(study: Study, repository: str) -> None:
  """Every parameter and override is a field of the study's config, of a type that fits.

  Each parameter's extreme values (and each categorical value) must pass the
  trainer's own config checks, so no trial fails on a value the study allows.
  Config paths are relative to `repository` (where trials start).
  """
  # Imported here: the checks need TensorFlow, the study file alone does not.
  from trainer import validation  # pylint: disable=import-outside-toplevel
  path = os.path.join(repository, study.config_file)
  if not os.path.exists(path):
    _fail("trainer.config", f"{study.config_file} does not exist (relative to {repository})")
  config = runpy.run_path(path)["get_config"]()
  fields = config_lib.flatten_config(config)
  for name in [*study.overrides, *(parameter.id for parameter in study.parameters)]:
    if name not in fields:
      close = difflib.get_close_matches(name, fields, n=1)
      _fail(f"parameter {name}" if name not in study.overrides else "trainer.overrides",
            f"{name!r} is not a config field" + (f"; did you mean {close[0]}?" if close else
                                                  "; valid ids are the fields of configs/default.py"))
  for parameter in study.parameters:
    field_type = _field_type(fields[parameter.id])
    fits = {"double": field_type is float, "integer": field_type in (int, float),
            "discrete": field_type is float or (field_type is int and all(
                float(value).is_integer() for value in parameter.values)),
            "categorical": field_type in (str, bool)}[parameter.kind]
    if not fits:
      _fail(f"parameter {parameter.id}", f"a {parameter.kind} range does not fit this "
            f"{field_type.__name__} field (its value is {fields[parameter.id]!r}); use "
            + {"float": "doubleValueSpec", "int": "integerValueSpec or discreteValueSpec of "
               "integers", "str": "categoricalValueSpec", "bool": "categoricalValueSpec"}.get(
                   field_type.__name__, "another field"))
  for name, value in study.overrides.items():
    try:
      config_lib.set_field(config, name, value, source="trainer.overrides")
    except (TypeError, ValueError) as error:
      _fail("trainer.overrides", f"{name}={value!r} does not fit the field ({error})")
  for parameter in study.parameters:
    for value in parameter.values or parameter.bounds:
      trial_config = config.copy_and_resolve_references()
      config_lib.set_field(trial_config, parameter.id, trainer_value(value, fields[parameter.id]))
      try:
        validation.validate_config(trial_config)
      except ValueError as error:
        _fail(f"parameter {parameter.id}", f"the value {value!r} fails the trainer's checks: {error}")


def trainer_value(value, field_value):
  """A trial's value as the config field holds it (64.0 for an int field is 64)."""
  if isinstance(field_value, bool):
    return value if isinstance(value, bool) else value == "True"
  if isinstance(field_value, int) and isinstance(value, float) and value.is_integer():
    return int(value)
  return value

