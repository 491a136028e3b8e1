"""IMAP: the client and its wire format, folder sync, connection slots and push (IDLE)."""
