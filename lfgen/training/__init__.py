"""Running LlamaFactory: the runner (slots filled as they free, from its queue and a run source), each attempt,
the executors (this machine, Ray) and the evaluations they run, the log watcher, status, inference."""
