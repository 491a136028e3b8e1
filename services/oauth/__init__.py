"""OAuth2 mailboxes: apps per tenant, the hosted connect flow, tokens and their refresh."""
