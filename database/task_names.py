"""Every Celery task's name, once: what an event row's `task_name` holds.

Here, at the bottom of the layers, because the event table stores these names and its
repositories query by them; services, the API's routes, the publishers and the worker's
routing table all read them from this enum instead of spelling them out. No imports, no
side effects: importing it never pulls in Celery or the worker.
"""

from __future__ import annotations

import enum


class TaskName(enum.StrEnum):
    process_event = "postroom.events.process"
    sync_account = "postroom.mail.sync_account"
    send = "postroom.mail.send"
    delete = "postroom.mail.delete"
    classify = "postroom.mail.classify"
    apply_rules = "postroom.mail.apply_rules"
    generate_thumbnail = "postroom.mail.generate_thumbnail"
    refit_tenant = "postroom.classify.refit_tenant"
    periodic_sync = "postroom.maintenance.periodic_sync"
    sweep_outbox = "postroom.maintenance.sweep_outbox"
    cleanup = "postroom.maintenance.cleanup"
    reconcile = "postroom.maintenance.reconcile"


# Beat's housekeeping tasks share this prefix (worker.observability quiets their per-run lines).
HOUSEKEEPING_PREFIX = "postroom.maintenance."
