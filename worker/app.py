"""The Celery application: broker, reliability settings, routes and the beat schedule."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange
from kombu import Queue as KQueue

from settings import Settings, get_settings
from worker import observability  # noqa: F401  (signal receivers: JSON logs, task metrics)
from worker.config import PRIORITY_STEPS, ROUTES, Queue, all_queues, lane_names

TASK_MODULES = [
    "worker.tasks.events",
    "worker.tasks.maintenance",
    "worker.tasks.send",
    "worker.tasks.classify",
    "worker.tasks.mail",
]


def make_celery(settings: Settings, *, publisher_only: bool = False) -> Celery:
    """The app; `publisher_only` (the API) has no result backend: it reads outcomes from the
    event row, and a Redis result backend would subscribe on every publish and retry for
    seconds when Redis is down, holding the webhook answer."""
    app = Celery("postroom", include=[] if publisher_only else TASK_MODULES)
    longest_countdown = settings.retry_cap_s
    visibility_timeout = int(longest_countdown + settings.task_time_limit_s) * 2 + 600
    app.conf.update(
        broker_url=settings.redis_url,
        result_backend=None if publisher_only else settings.redis_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # One direct exchange per queue, named like it: Celery's producer and the API's
        # AsyncPublisher then address the same exchange, and kombu can restore a message
        # (worker lost, visibility timeout) through the binding of that exchange.
        # Every lane of every class is a queue of its own (worker.config.LANES).
        task_queues=[KQueue(q, Exchange(q, type="direct"), routing_key=q) for q in all_queues()],
        task_default_queue=lane_names(Queue.short)[0],
        # Beat's ticks and any send that bypasses worker.dispatch; dispatch picks the lane.
        task_routes={name: {"queue": lane_names(r.queue)[0]} for name, r in ROUTES.items()},
        task_default_priority=5,
        # Reliability: a task is acknowledged only once it finished; a killed worker's task goes
        # back to the queue; one message reserved per process so a crash loses at most that one.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        result_expires=settings.result_expires_s,
        result_extended=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        # On a lost broker connection, acks_late tasks in flight will be redelivered: cancel
        # them rather than finish them a second time. (A worker that stopped consuming after
        # a Redis reconnect, Celery issue 8030, was fixed in kombu 5.4; fault test 3 checks.)
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_transport_options={
            # Must outlast the longest countdown plus the hard time limit, or Redis re-delivers
            # a retry that is only waiting for its ETA (Celery issues 2599, 5935).
            "visibility_timeout": visibility_timeout,
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            # Round robin: the queue just served goes to the end of the BRPOP list, so lanes
            # (tenants) of one priority step take turns (docs/architecture.md "Lanes").
            "queue_order_strategy": "round_robin",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
            "retry_on_timeout": True,
            "health_check_interval": 15,
        },
        # Set in all three places, or Celery falls back to one hour (Celery issue 7651).
        result_backend_transport_options={
            "retry_policy": {"timeout": 5.0},
            "visibility_timeout": visibility_timeout,
        },
        visibility_timeout=visibility_timeout,
        redis_socket_timeout=5,
        redis_socket_connect_timeout=2,
        beat_schedule={
            "sweep-outbox": {
                "task": "postroom.maintenance.sweep_outbox",
                "schedule": settings.outbox_sweep_interval_s,
                "options": {"expires": settings.outbox_sweep_interval_s * 2},
            },
            "cleanup": {
                "task": "postroom.maintenance.cleanup",
                "schedule": 3600.0,
                "options": {"expires": 1800},
            },
            "periodic-sync": {
                "task": "postroom.maintenance.periodic_sync",
                "schedule": 300.0,
                "options": {"expires": 240},
            },
            "reconcile": {
                "task": "postroom.maintenance.reconcile",
                "schedule": 900.0,
                "options": {"expires": 600},
            },
        },
    )
    # Beat's ticks at their route's priority. Without it a tick took the tasks' default
    # (task_default_priority, 5), which the Redis transport serves only after every more urgent
    # message of the queues the same worker consumes (the periodic worker has a slot of its
    # own too: docs/operations.md "Worker layout").
    for entry in app.conf.beat_schedule.values():
        entry["options"]["priority"] = ROUTES[entry["task"]].priority
    if publisher_only:
        # A publish that cannot reach Redis at once gives up: the event is committed and the
        # outbox sweeper publishes it later. Without this kombu reconnects for seconds.
        app.conf.broker_transport_options.update(
            {
                "max_retries": 1,
                "interval_start": 0,
                "interval_step": 0.1,
                "interval_max": 0.2,
                "socket_connect_timeout": settings.publish_timeout_s,
                "socket_timeout": settings.publish_timeout_s,
            }
        )
        app.conf.broker_connection_timeout = settings.publish_timeout_s
    return app


celery_app = make_celery(get_settings())
