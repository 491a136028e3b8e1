"""OAuth2 apps, grants and hosted-flow states (services/oauth/)."""
