"""Request and response bodies of the /v1 API, named by role (AccountCreate, AccountPublic, ...)."""
