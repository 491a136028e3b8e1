"""Events: webhook ingest and signatures, jobs, the outbox, schedules, cancel and dead letters."""
