"""Running LlamaFactory: process launch (every argv), the runner, its state and lock, the log watcher, inference, reporting."""
