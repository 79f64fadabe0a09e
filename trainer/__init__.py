"""The training job (`python -m trainer.main`) and its sub-packages.

The modules here are the job itself: `train` (the orchestrator and its loop),
`train_state`, `steps`, `checkpoints`, `models`, `metrics`, `optimizers`, `strategy`,
`preemption`, `export`, `reporter` (what a run reports) with `summaries`, `run_files`,
`plots` and `fileio`, `workdir` (every path of a run), `validation`, `errors`, `cli`,
`logs`. Sub-packages: `evaluation` (the report behind `python -m trainer.evaluate`), `cloud` (Vertex AI, TFX and local-cluster glue) and
`benchmarking` (behind scripts/benchmark.py). docs/architecture.md has the data flow.
"""
