"""Hyperparameter tuning on Optuna: a declared search space over TrainConfig settings, trials that are
ordinary training runs reporting their per-epoch validation metric to Optuna's pruner, and the study's
pictures.

- ``space``: parsing, validating and showing a search space (``lr=1e-4..1e-2:log``, ``image_size=96,112``);
- ``objective``: what a study optimises (val accuracy, RMSE, 0-5 accuracy) and in which direction;
- ``study``: running trials (here or, through ``run_trial``, on a worker), the pruner, the best trial;
- ``pictures``: Optuna's optimisation history and parameter importances as PNG files.

Importable without web or database packages: the study's storage is whatever Optuna storage URL the caller
gives (a SQLite file for ``binwatch tune``, binwatch's own database for queued tuning jobs).
"""
