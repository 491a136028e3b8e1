"""Repositories: every SQL statement postroom runs, tenant filter included."""
