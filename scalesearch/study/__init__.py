"""A run as trials: the one run setup, one trial, the row schema, the run folder, the backends that run trials."""
