"""The privacy audit of a trained run: evidence about the model itself, measured without retraining.

- `statistics`: the attack's numbers from per-example scores (ROC AUC, the true-positive rate at a low false-positive
  rate), the one-run lower bound on ε (Steinke, Nasr, Jagielski, NeurIPS 2023) and canary exposure (Carlini et al.,
  "The Secret Sharer"). numpy and scipy only.
- `canaries`: which generated canaries a run trains with (each included with probability ½ from a recorded seed),
  mixed into its training rows, and their record in the run folder. The canaries themselves come from the task
  (`Task.make_canaries`).
- `leakage`: the audit of a finished run (`audit_run`): it restores the model, scores the run's own training rows
  against as many held-out rows, and its canaries, and writes audit.json and the privacy report."""
