"""Folders: IMAP and POP3 sync state per folder."""
