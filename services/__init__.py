"""Domain logic: ingest, Nylas, IMAP, SMTP, MIME, classify, dead letters, crypto, outbox."""
