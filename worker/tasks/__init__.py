"""Thin Celery tasks: ids in, one service call, a small JSON dict out."""
