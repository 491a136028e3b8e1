"""Accounts: rows, credentials, sync bookkeeping, push leases and quotas."""
