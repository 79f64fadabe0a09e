"""Cloud and cluster glue around the training job (where a run writes, Vertex AI's AIP_*
directories included, is `trainer.workdir`).

- `tfx_trainer`: a TFX Trainer `run_fn` that maps TFX's FnArgs onto `train_and_evaluate`;
- `local_cluster`: free localhost ports and TF_CONFIGs for a multi-worker cluster on one
  machine, and the loopback interface of the workers' private network namespace
  (`python -m trainer.cloud.local_cluster N`, `scripts/run_multiworker_local.sh`).
"""
