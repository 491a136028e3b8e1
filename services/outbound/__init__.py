"""Sending: compose, the at-most-once ledger, SMTP or Nylas delivery, the Sent copy, templates."""
