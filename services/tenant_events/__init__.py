"""Outbound events: what postroom tells a tenant's application (API.md "Outbound events")."""
