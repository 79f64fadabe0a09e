"""Where a run writes: the workdir, unless the platform names its own directories.

Vertex AI custom jobs with a base output directory set AIP_MODEL_DIR,
AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR (`<base>/model/`,
`<base>/checkpoints/`, `<base>/logs/`); Vertex then finds the SavedModel,
the checkpoints and the TensorBoard events where it expects them. Everything
else (config.json, history.json, metrics.json, plots/) stays in the workdir.
"""

import dataclasses
import os
from typing import Mapping

CHECKPOINT_DIRNAME = "checkpoints"
SAVED_MODEL_DIRNAME = "saved_model"
# Environment variables Vertex AI sets, by the output they name.
MODEL_DIR_VARIABLE = "AIP_MODEL_DIR"
CHECKPOINT_DIR_VARIABLE = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR_VARIABLE = "AIP_TENSORBOARD_LOG_DIR"


@dataclasses.dataclass(frozen=True)
class OutputDirs:
  """The directories of one run.

  Attributes:
    workdir: config.json, history.json, metrics.json and plots/.
    checkpoints: the chief's checkpoints, which every task restores from.
    tensorboard: TensorBoard root: hparams and config text here, scalars and
      images in its train/ and eval/ subdirectories.
    saved_model: the exported SavedModel (saved_model.pb directly inside).
  """
  workdir: str
  checkpoints: str
  tensorboard: str
  saved_model: str


def resolve(workdir: str, environ: Mapping[str, str] | None = None,
            saved_model: str | None = None) -> OutputDirs:
  """The run's directories: `workdir`'s own, or the AIP_* ones where set.

  Args:
    workdir: the --workdir.
    environ: environment to read (os.environ by default).
    saved_model: explicit SavedModel directory (e.g. TFX's serving_model_dir);
      wins over AIP_MODEL_DIR.
  """
  environ = os.environ if environ is None else environ
  return OutputDirs(
      workdir=workdir,
      checkpoints=(environ.get(CHECKPOINT_DIR_VARIABLE)
                   or os.path.join(workdir, CHECKPOINT_DIRNAME)),
      tensorboard=environ.get(TENSORBOARD_DIR_VARIABLE) or workdir,
      saved_model=(saved_model or environ.get(MODEL_DIR_VARIABLE)
                   or os.path.join(workdir, SAVED_MODEL_DIRNAME)),
  )
