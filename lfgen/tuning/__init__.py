"""``lfgen tune``: Bayesian search with early stopping over ordinary runs of an experiment (Optuna).

space.py   the search space (presets/tune_space.yaml or a space file), checked before any trial starts,
           and a trial's parameters as build options
strategies.py  the samplers and pruners (--sampler, --pruner), the study opened with them (the study itself,
           study.db, is a run record: lfgen.runs.study)
trials.py  the trials as the runner's run source: asked when a slot frees, laid out as runs/<trial>.yaml, reported
           to the pruner at each poll, told as each run ends; killed trials resumed
tuner.py   the study set up or resumed, the --dry-run plan, best.yaml
scoring.py the generation settings of a study scored by lfgen eval
staged.py  seed 000's stages (rank, alpha, dropout, target) one search each, then a combined final run

Optuna is an extra (``pip install 'lfgen[tune]'``) imported only inside these functions.
"""
