"""Cloud and cluster glue around the training job (where a run writes, Vertex AI's AIP_*
directories included, is `trainer.workdir`).

- `hypertune`: the trainer as a Vertex AI tuning trial: `--config.a.b VALUE` arguments, the
  trial's own workdir, its metric reported after each evaluation as cloudml-hypertune does;
- `tfx_trainer`: a TFX Trainer `run_fn` that maps TFX's FnArgs onto `train_and_evaluate`;
- `local_cluster`: free localhost ports and TF_CONFIGs for a multi-worker cluster on one
  machine, and the loopback interface of the workers' private network namespace
  (`python -m trainer.cloud.local_cluster N`, `scripts/run_multiworker_local.sh`).
"""
