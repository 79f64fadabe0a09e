"""The pipeline: data -> train -> evaluate (and bless) -> push, as a KFP v2 pipeline.

`create_pipeline(image, accelerator_type, accelerator_count)` builds it: every
component on `image` (the project's image on Vertex AI; None locally, where
the SubprocessRunner ignores images), with kfp taken from the image rather
than installed at start (`install_kfp_package=False`: the image installs the
`[pipeline]` extra). The train step requests the accelerator; Vertex AI
Pipelines runs it as a custom training job on a machine with it (the local
runner ignores resource requests).

The evaluate and push steps are never cached: their result depends on the
serving directory, which changes between runs, not only on their inputs. The
data and train steps may be cached on Vertex AI: the same parameters give the
same model (see docs/pipeline.md on resuming).

The push step runs in every run and reads the blessing itself (as TFX's
Pusher does), so the outcome never depends on a runner's support for
conditional branches.
"""

from kfp import dsl

from trainer.pipeline import blessing
from trainer.pipeline import components

PIPELINE_NAME = "dae-trainer"
# The image named when none is given: the Dockerfile's base. The local runner
# ignores images; naming one keeps KFP from warning about its default's change.
LOCAL_BASE_IMAGE = "python:3.11-slim"


def create_pipeline(image: str | None = None, accelerator_type: str = "",
                    accelerator_count: int = 0):
  """The `@dsl.pipeline` function, its components on `image`, training on the accelerator."""
  options = {"install_kfp_package": False, "base_image": image or LOCAL_BASE_IMAGE}
  data_op, train_op, evaluate_op, push_op = (
      dsl.component(function, **options) for function in (
          components.data, components.train, components.evaluate, components.push))

  @dsl.pipeline(name=PIPELINE_NAME,
                description="Train the denoising autoencoder, evaluate it against the model in "
                            "service, and push it to the serving directory if blessed.")
  def dae_pipeline(config: str, workdir_root: str, serving_dir: str, overrides: str = "{}",
                   min_psnr_db: float = blessing.DEFAULT_MIN_PSNR_DB,
                   max_psnr_drop_db: float = blessing.DEFAULT_MAX_PSNR_DROP_DB,
                   extra_levels: list = []) -> dsl.Artifact:  # pylint: disable=dangerous-default-value
    data_task = data_op(config=config, overrides=overrides).set_display_name("data")
    train_task = train_op(config=config, overrides=overrides, workdir_root=workdir_root,
                          dataset=data_task.outputs["dataset"]).set_display_name("train")
    if accelerator_type and accelerator_count:
      train_task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    evaluate_task = evaluate_op(
        config=config, overrides=overrides, serving_dir=serving_dir, min_psnr_db=min_psnr_db,
        max_psnr_drop_db=max_psnr_drop_db, extra_levels=extra_levels,
        dataset=data_task.outputs["dataset"],
        model=train_task.outputs["model"]).set_display_name("evaluate")
    push_task = push_op(serving_dir=serving_dir, model=train_task.outputs["model"],
                        blessing=evaluate_task.outputs["blessing"]).set_display_name("push")
    for task in (evaluate_task, push_task):
      task.set_caching_options(False)
    return push_task.outputs["pushed"]

  return dae_pipeline
