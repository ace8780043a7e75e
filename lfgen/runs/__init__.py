"""A run's records: the low layer every command reads, below the builder, the runner, the tuner and compare.

states.py       the run-state enum, the moves between states, an evaluation's states
store.py        state.sqlite: the runs table (one ``transition()`` writes a move, its timestamps and its event),
                the event log, the evaluations table
lock.py         the flocks: one lfgen per experiment, one run per output dir
manifest.py     experiment.yaml: the schema, read and written (building the runs is lfgen.experiments')
study.py        study.db: lfgen tune's Optuna study, its trials as rows
parsing.py      tolerant, fast parsing of what LlamaFactory writes
reader.py       one run directory as plain data (RunData): curves, results, config, state
scoring.py      lfgen eval's scores of generated answers
environment.py  lfgen_env.json read back
discover.py     finding run directories under a path; natural sort
ranking.py      THE best run and THE keys that vary
metrics.py      the metric registry: name, direction, the command that produces it; a run's value of one

Nothing here imports a package above it (tests/test_layout.py checks the stack).
"""
