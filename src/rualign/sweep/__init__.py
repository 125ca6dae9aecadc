"""`rualign sweep`: Optuna recipe search over experiment files (README, "Recipe search").

schema.py reads the sweep file, space.py resolves paths into the experiment and holds the distributions,
study.py runs trials through the pipeline's content-hashed store, prune.py measures validation loss for the
median pruner, outputs.py writes trials.csv, best.yaml, plots and report.md.
"""
