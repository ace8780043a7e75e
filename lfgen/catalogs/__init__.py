"""What lfgen knows, as data with schemas: presets, the rule registry, GPUs, LlamaFactory's keys and templates."""
