"""Filter and score plugins, one module each; ``corral.scheduler.pipeline`` puts them in order."""
