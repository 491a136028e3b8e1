"""Messages: API reads and jobs, deletes, MIME parsing, HTML text and threads."""
