"""Events: rows and claims, API reads, cancel, workflow steps and dead letters."""
