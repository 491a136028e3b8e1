"""Domain logic of postroom: ingest, Nylas, IMAP, SMTP, MIME, classify, dead letters, crypto, outbox."""
