"""The evaluation suite behind `python -m trainer.evaluate` (config: configs/evaluate.py).

- `settings`: the evaluate config's checks (baselines, noise levels, counts);
- `loading`: the SavedModels to score and the clean test, tuning and fitting images;
- `scoring`: fixed noise per (type, level) and the per-image metrics, in numpy;
- `runner`: the orchestrator `evaluate_and_report`: the levels, the representation, the report;
- `registry`: the baselines and representation scorers, handed to the runner;
- `plan`: the levels, each baseline's cache key and cost, what is cached (no TensorFlow);
- `schedule`: runs the plan: models here, baselines from the cache or the workers;
- `records`: the immutable results, and a level's report entry and progress line;
- `cache`: the model-independent results kept on disk; `parallel`: the worker processes;
- `progress`: stage timings, one line per level with the time left, the bar on a terminal;
- `baselines`: the classical denoisers (`wiener`: the linear filter); `tuning`: their parameter grids and the search;
- `representation`: the linear probe and k-means on the encoders' codes;
- `report`: report.json, report.md, plots and TensorBoard runs.
"""
