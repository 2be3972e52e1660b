"""What a run shows: plots, accuracy-against-FLOPs curves, and the CLI's tables and numbers."""
