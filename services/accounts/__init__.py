"""Mail accounts: what the API manages, what tasks load, verification and quotas."""
