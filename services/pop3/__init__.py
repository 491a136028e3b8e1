"""POP3: the client, sync of the one INBOX, and deletes."""
