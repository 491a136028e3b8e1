"""Outbound: the send ledger, drafts, attachments and templates."""
