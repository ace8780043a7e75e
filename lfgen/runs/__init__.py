"""A run's records."""
