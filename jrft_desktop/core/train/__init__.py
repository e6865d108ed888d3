"""Training: the loop (`loop.Trainer`), batching and the learning-rate schedule, the optimisation step, precision,
several processes, private training (DP-SGD) and the cost estimate made before a run starts.

The package imports nothing itself, so that `inference` can use `precision` and `distributed` without loading the
loop (which evaluates through `inference`)."""
