"""The pipeline's steps as KFP lightweight Python components: thin calls into `tasks`.

KFP copies each function's source into its component and runs it in a fresh
Python process (a subprocess locally, a container of the project's image on
Vertex AI): a body can use only what it imports itself, so each one imports
`trainer.pipeline.tasks` and hands it the parameters and artifacts, then
prints the step's outcome. `definition.create_pipeline` turns these functions
into components with the image of its choice.
"""

from kfp import dsl


def data(config: str, overrides: str, dataset: dsl.Output[dsl.Dataset]):
  """Resolves and verifies the dataset; records name, version, split sizes and a digest."""
  from trainer.pipeline import tasks  # pylint: disable=import-outside-toplevel
  record = tasks.data_step(config, overrides, dataset)
  print(f"data: {record['dataset']} {record['version']}, {record['num_train_examples']} "
        f"training and {record['num_eval_examples']} test images, sha256 {record['sha256'][:16]}")


def train(config: str, overrides: str, workdir_root: str, dataset: dsl.Input[dsl.Dataset],
          model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics],
          tensorboard: dsl.Output[dsl.Artifact]):
  """Trains, or resumes, in the config's stable workdir; exports the SavedModel."""
  from trainer.pipeline import tasks  # pylint: disable=import-outside-toplevel
  record = tasks.train_step(config, overrides, workdir_root, dataset, model, metrics,
                            tensorboard)
  print(f"train: step {record['step']}, eval loss {record['metrics'].get('loss')}, "
        f"workdir {record['workdir']}")


def evaluate(config: str, overrides: str, serving_dir: str, min_psnr_db: float,
             max_psnr_drop_db: float, extra_levels: list, dataset: dsl.Input[dsl.Dataset],
             model: dsl.Input[dsl.Model], blessing: dsl.Output[dsl.Artifact]):
  """Scores the candidate and the model in service on the same noisy images; blesses or not."""
  from trainer.pipeline import tasks  # pylint: disable=import-outside-toplevel
  record = tasks.evaluate_step(config, overrides, serving_dir, min_psnr_db, max_psnr_drop_db,
                               extra_levels, dataset, model, blessing)
  print(f"evaluate: {record['reason']}")


def push(serving_dir: str, model: dsl.Input[dsl.Model], blessing: dsl.Input[dsl.Artifact],
         pushed: dsl.Output[dsl.Artifact]):
  """Pushes a blessed model as the serving directory's next version; nothing otherwise."""
  from trainer.pipeline import tasks  # pylint: disable=import-outside-toplevel
  record = tasks.push_step(serving_dir, model, blessing, pushed)
  print(f"push: {record['reason']}")
