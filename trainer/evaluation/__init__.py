"""The evaluation suite behind `python -m trainer.evaluate` (config: configs/evaluate.py).

- `settings`: the evaluate config's checks (baselines, noise levels, counts);
- `loading`: the SavedModels to score and the clean test, tuning and fitting images;
- `scoring`: fixed noise per (type, level) and the per-image metrics, in numpy;
- `runner`: the orchestrator `evaluate_and_report`: every level, method and representation;
- `baselines`: the classical denoisers; `tuning`: their parameter grids and the search;
- `representation`: the linear probe and k-means on the encoders' codes;
- `report`: report.json, report.md, plots and TensorBoard runs.
"""
