"""Builds the Vertex AI CustomJobSpec (or HyperparameterTuningJob) for a dae-trainer image, as YAML.

`scripts/submit_vertex.sh` writes this module's output to a file and passes it to
`gcloud ai custom-jobs create --config=FILE`, so the keys are the REST API's
camelCase names (workerPoolSpecs, machineSpec, containerSpec.imageUri, ...).
Three shapes:

- one replica (default): n1-standard-8 with one NVIDIA_TESLA_T4;
- `--replicas N`: MultiWorkerMirroredStrategy; worker pool 0 is the chief (one
  replica), pool 1 holds the other N-1 workers; Vertex sets TF_CONFIG on each;
- `--tpu`: a TPU v5e slice (ct5lp-hightpu-4t, topology 2x2), TPUStrategy.

With `--study=FILE` (studies/*.yaml) it prints a HyperparameterTuningJob for
`gcloud ai hp-tuning-jobs create --config=FILE` instead: the study file's
studySpec and trial counts, with each parameterId prefixed `config.` (Vertex
starts each trial with `--config.train.learning_rate 0.003 ...`, the
trainer's own override flags), and the job above as its trialJobSpec, running
the study's trainer config and overrides and reporting its metric
(`--config.runtime.hypertune_metric`).

Standard library only, so it runs with the Cloud SDK image's python3; `--study`
needs the project's environment (PyYAML, and TensorFlow for the study's checks):

    python3 scripts/vertex_job.py --image=IMAGE --output-dir=gs://BUCKET/run \\
        [--replicas=3 | --tpu] [--study=studies/X.yaml] [-- --config.train.num_epochs=5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

GPU_MACHINE_TYPE = "n1-standard-8"
GPU_ACCELERATOR_TYPE = "NVIDIA_TESLA_T4"
# TPU v5e on Vertex AI: the machine type names the chips per host; the slice
# shape is `tpuTopology`, and there is no accelerator type.
TPU_MACHINE_TYPE = "ct5lp-hightpu-4t"
TPU_TOPOLOGY = "2x2"
# The TPU v5e slices of ct5lp-hightpu-4t hosts (4 chips each; a pod is 256
# chips, a 2D torus): 2x2 is one host, the larger ones several.
TPU_TOPOLOGIES = ("2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")
# More replicas than this is a typo, not a job: each would get 2 or fewer of
# the default global batch of 128 images (train.batch_size must divide among them).
MAX_REPLICAS = 64
# The most GPUs one Vertex AI machine has (a2-megagpu-16g).
MAX_ACCELERATOR_COUNT = 16
DEFAULT_CONFIG = "configs/default.py"
TPU_CONFIG = "configs/tpu.py"
# Vertex AI passes each trial's parameters as `--<parameterId> <value>`: with this
# prefix they are the trainer's config overrides.
PARAMETER_ID_PREFIX = "config."
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Under the job's base output directory: Vertex itself uses model/, checkpoints/
# and logs/ there (AIP_MODEL_DIR, ...), so the trainer's own workdir gets a name
# of its own.
WORKDIR_NAME = "workdir"


def build_job_spec(*,
                   image: str,
                   output_dir: str,
                   config: str | None = None,
                   replicas: int = 1,
                   tpu: bool = False,
                   machine_type: str | None = None,
                   accelerator_type: str | None = None,
                   accelerator_count: int | None = None,
                   tpu_topology: str | None = None,
                   trainer_args: Sequence[str] = ()) -> dict[str, Any]:
  """Returns a CustomJobSpec as a dict with camelCase keys.

  Args:
    image: the training image's URI; its entrypoint is `python -m trainer.main`.
    output_dir: gs:// base output directory of the job; the trainer's workdir
      is `<output_dir>/workdir`.
    config: trainer config path inside the image (relative to its /app);
      configs/default.py, or configs/tpu.py with `tpu`.
    replicas: total replicas; more than one means multi-worker training.
    tpu: run on a TPU v5e slice instead of GPUs.
    machine_type: defaults to n1-standard-8, or ct5lp-hightpu-4t with `tpu`.
    accelerator_type: GPU type, NVIDIA_TESLA_T4 by default; not for `tpu`.
    accelerator_count: GPUs per replica, 1 by default; 0 runs on CPUs only.
    tpu_topology: the TPU slice's topology with `tpu`, 2x2 by default.
    trainer_args: more trainer flags, appended last so that they win.

  Raises:
    ValueError: a value the job cannot run with; the message names it and the fix.
  """
  if not output_dir.startswith("gs://"):
    raise ValueError(f"--output-dir {output_dir!r} is not a Cloud Storage path; "
                     "pass one like gs://BUCKET/dae-trainer/run1")
  if replicas < 1:
    raise ValueError(f"--replicas {replicas} is below 1; pass 1 for one machine "
                     "or N > 1 for multi-worker training")
  if replicas > MAX_REPLICAS:
    raise ValueError(f"--replicas {replicas} is above {MAX_REPLICAS}; pass at most "
                     f"{MAX_REPLICAS} (a chief and N-1 workers), e.g. --replicas=4")
  if tpu and replicas != 1:
    raise ValueError(f"--replicas {replicas} with --tpu: a TPU job is one slice; "
                     "choose its size with --tpu-topology instead")
  if tpu and (accelerator_type or accelerator_count is not None):
    raise ValueError("--accelerator-type/--accelerator-count do not apply to --tpu; "
                     "the TPU slice is set by --machine-type and --tpu-topology")
  if tpu_topology and not tpu:
    raise ValueError(f"--tpu-topology {tpu_topology} needs --tpu; add --tpu or drop it")
  if tpu_topology is not None and tpu_topology not in TPU_TOPOLOGIES:
    raise ValueError(f"--tpu-topology {tpu_topology!r} is not a TPU v5e slice; pass one of "
                     f"{', '.join(TPU_TOPOLOGIES)} (chips across x down)")
  if accelerator_count is not None and accelerator_count > MAX_ACCELERATOR_COUNT:
    raise ValueError(f"--accelerator-count {accelerator_count} is more GPUs than a Vertex AI "
                     f"machine has (at most {MAX_ACCELERATOR_COUNT})")
  if accelerator_count is not None and accelerator_count < 0:
    raise ValueError(f"--accelerator-count {accelerator_count} is negative; "
                     "pass 0 for CPUs only or the number of GPUs per replica")

  if tpu:
    machine_spec = {"machineType": machine_type or TPU_MACHINE_TYPE,
                    "tpuTopology": tpu_topology or TPU_TOPOLOGY}
  else:
    machine_spec = {"machineType": machine_type or GPU_MACHINE_TYPE}
    count = 1 if accelerator_count is None else accelerator_count
    if count:
      machine_spec["acceleratorType"] = accelerator_type or GPU_ACCELERATOR_TYPE
      machine_spec["acceleratorCount"] = count

  args = [f"--config={config or (TPU_CONFIG if tpu else DEFAULT_CONFIG)}",
          f"--workdir={output_dir.rstrip('/')}/{WORKDIR_NAME}"]
  if tpu:
    args.append("--config.runtime.strategy=tpu")
  elif replicas > 1:
    args.append("--config.runtime.strategy=multi_worker_mirrored")
  args.extend(trainer_args)

  def pool(replica_count: int) -> dict[str, Any]:
    # Every replica runs the same command; Vertex's TF_CONFIG tells each its role.
    return {"machineSpec": dict(machine_spec),
            "replicaCount": replica_count,
            "containerSpec": {"imageUri": image, "args": list(args)}}

  # Pool 0 is the chief and must have exactly one replica; pool 1 holds the rest.
  pools = [pool(1)]
  if replicas > 1:
    pools.append(pool(replicas - 1))
  return {"workerPoolSpecs": pools,
          "baseOutputDirectory": {"outputUriPrefix": output_dir}}


def build_tuning_job_spec(study_file: str, *, image: str, output_dir: str,
                          trainer_args: Sequence[str] = (), **job_options) -> dict[str, Any]:
  """Returns a HyperparameterTuningJob (camelCase dict) running `study_file`'s study.

  Every trial is the custom job `build_job_spec` describes, with the study's
  config, overrides and metric flag; `job_options` are its machine options.
  Each trial trains in `<output_dir>/workdir/<trial id>` and Vertex AI gives it
  `<output_dir>/<trial id>/model/` (and checkpoints/, logs/).

  Raises:
    ValueError: a bad study file or job value; the message names it and the fix.
  """
  # The study's module (PyYAML, ml_collections, TensorFlow for the checks) only here, so that
  # plain custom jobs keep working with the Cloud SDK image's python3.
  sys.path.insert(0, _REPOSITORY)
  # pylint: disable=import-outside-toplevel
  try:
    from trainer import logs
    from trainer.tuning import study as study_lib
  except ImportError as error:
    raise ValueError(f"--study needs the project's Python environment ({error}); run with "
                     "PYTHON=.venv/bin/python (make install)") from error
  study = study_lib.load_study(study_file)
  # The values' checks import TensorFlow: quietly, and only for a well-formed study.
  logs.silence_tensorflow_startup(sys.argv)
  study_lib.check_against_config(study, _REPOSITORY)
  study_spec = json.loads(json.dumps(study.study_spec))
  for parameter in study_spec["parameters"]:
    parameter["parameterId"] = PARAMETER_ID_PREFIX + parameter["parameterId"]
  trial_job = build_job_spec(image=image, output_dir=output_dir, config=study.config_file,
                             trainer_args=[*study.trainer_args()[1:], *trainer_args],
                             **job_options)
  return {"displayName": study.display_name,
          "studySpec": study_spec,
          "maxTrialCount": study.max_trial_count,
          "parallelTrialCount": study.parallel_trial_count,
          "maxFailedTrialCount": study.max_failed_trial_count,
          "trialJobSpec": trial_job}


def to_yaml(value: Any, indent: int = 0) -> str:
  """Block-style YAML for dicts, lists, strings, numbers and booleans.

  Strings are written as JSON strings, which YAML reads as double-quoted
  scalars, so no value can be mistaken for a number, a boolean or a comment.
  """
  pad = " " * indent
  lines = []
  if isinstance(value, dict):
    for key, item in value.items():
      if isinstance(item, (dict, list)) and item:
        lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
      else:
        lines.append(f"{pad}{key}: {json.dumps(item)}")
  elif isinstance(value, list):
    for item in value:
      if isinstance(item, (dict, list)) and item:
        # The first key goes on the dash line; the rest align under it.
        nested = to_yaml(item, indent + 2)
        lines.append(f"{pad}- {nested[indent + 2:]}")
      else:
        lines.append(f"{pad}- {json.dumps(item)}")
  else:
    lines.append(pad + json.dumps(value))
  return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
  """Reports bad flags in one line, naming the flag and where to look."""

  def error(self, message):
    self.exit(2, f"submit_vertex: {message}; see --help for the flags\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses the spec flags; everything after `--` is passed to the trainer."""
  argv = list(argv)
  trainer_args = []
  if "--" in argv:
    split = argv.index("--")
    argv, trainer_args = argv[:split], argv[split + 1:]
  parser = _OneLineParser(
      prog="vertex_job.py",
      description="Prints a Vertex AI CustomJobSpec (YAML) for the dae-trainer image.",
      epilog="Trainer flags go after --, e.g. -- --config.train.num_epochs=5")
  parser.add_argument("--image", required=True, help="training image URI")
  parser.add_argument("--output-dir", required=True,
                      help="gs:// base output directory; the trainer's workdir is "
                      "<output-dir>/workdir")
  parser.add_argument("--config", help="config path in the image "
                      f"(default {DEFAULT_CONFIG}, or {TPU_CONFIG} with --tpu)")
  parser.add_argument("--replicas", type=int, default=1,
                      help="replicas; N > 1 trains multi-worker (chief + N-1 workers)")
  parser.add_argument("--tpu", action="store_true", help="TPU v5e slice instead of GPUs")
  parser.add_argument("--machine-type", help=f"default {GPU_MACHINE_TYPE}, "
                      f"or {TPU_MACHINE_TYPE} with --tpu")
  parser.add_argument("--accelerator-type", help=f"GPU type (default {GPU_ACCELERATOR_TYPE})")
  parser.add_argument("--accelerator-count", type=int,
                      help="GPUs per replica (default 1; 0 for CPUs only)")
  parser.add_argument("--study", help="a study file (studies/*.yaml): print a "
                      "HyperparameterTuningJob whose trials are this job")
  parser.add_argument("--tpu-topology",
                      help=f"TPU slice topology with --tpu (default {TPU_TOPOLOGY})")
  args = parser.parse_args(argv)
  args.trainer_args = trainer_args
  return args


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  options = {"replicas": args.replicas, "tpu": args.tpu, "machine_type": args.machine_type,
             "accelerator_type": args.accelerator_type,
             "accelerator_count": args.accelerator_count, "tpu_topology": args.tpu_topology}
  try:
    if args.study:
      if args.config:
        raise ValueError(f"--config {args.config} with --study: the study file's trainer.config "
                         "names the config; drop --config")
      spec = build_tuning_job_spec(args.study, image=args.image, output_dir=args.output_dir,
                                   trainer_args=args.trainer_args, **options)
    else:
      spec = build_job_spec(image=args.image, output_dir=args.output_dir, config=args.config,
                            trainer_args=args.trainer_args, **options)
  except ValueError as error:
    print(f"submit_vertex: {error}", file=sys.stderr)
    return 2
  print(to_yaml(spec))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
