"""Admin for training: export dataset versions, start and watch runs, the model registry, generation, auto-train.

One module per concern; importing them here is what registers them with the admin site. The views are
thin: forms turn inputs into service arguments (`request_export`, `start_run`, `cancel_run`,
`start_generation`) and show the errors those raise. Nothing here imports torch or the trainers' heavy
modules — only `training.trainers.config` (via the forms) — so the web process stays light.
"""

from training.admin import audits, autotrain, base_models, datasets, exports, generation, judges, registry, runs

__all__ = ["audits", "autotrain", "base_models", "datasets", "exports", "generation", "judges", "registry", "runs"]
