"""The worker's Celery application: its settings (worker.config), task modules and signals.

Importing this module builds the app and connects the worker's signal receivers (logs,
metrics, beat's lock): only workers, beat and tests import it, never the API
(scripts/check_imports.py keeps it so).
"""

from __future__ import annotations

from settings import get_settings
from worker import observability  # noqa: F401  (signal receivers: JSON logs, task metrics)
from worker.config import TASK_MODULES, make_celery

__all__ = ["TASK_MODULES", "celery_app", "make_celery"]

celery_app = make_celery(get_settings())
