"""A TFX-style pipeline of the project's own steps, on Kubeflow Pipelines v2 (docs/pipeline.md).

- `components`: the steps (data, train, evaluate, push) as KFP lightweight Python components;
- `tasks`: what each step does, in plain Python, with the project's code;
- `scores`: a SavedModel's PSNR on the evaluation suite's fixed noisy test set;
- `blessing`: the rule that blesses a candidate against the model in service;
- `serving`: the serving directory (TF Serving's `<dir>/<version>/`): the model in service,
  atomic pushes;
- `definition`: the pipeline itself; `launch`: local runs, the YAML for Vertex AI, PipelineJobs;
- `__main__`: `python -m trainer.pipeline run|compile|submit`.

Needs the `[pipeline]` extra (kfp).
"""
