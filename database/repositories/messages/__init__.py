"""Messages: upserts, API reads and threads."""
