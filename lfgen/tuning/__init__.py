"""``lfgen tune``: Bayesian search with early stopping over ordinary runs of an experiment (Optuna).

space.py   the search space (presets/tune_space.yaml or a space file), checked before any trial starts,
           and a trial's parameters as build options
study.py   the Optuna study in the experiment folder (SQLite), its sampler and pruner, and its trials as rows
tuner.py   the loop: ask, lay the trial out as runs/<trial>.yaml, train it through the runner (which prunes it
           on its eval loss), tell; resume after kill -9; best.yaml
staged.py  seed 000's stages (rank, alpha, dropout, target) one search each, then a combined final run

Optuna is an extra (``pip install 'lfgen[tune]'``) imported only inside these functions.
"""
