"""Experiments on disk: sweeps (axes, grids, random spaces), the manifest, making one, finished runs, W&B export."""
