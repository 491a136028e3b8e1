"""Celery side of postroom: the app, its configuration, the retry policy and thin tasks."""
