"""Print a .env for local use: a fresh credential key, a local webhook secret and an ops token.

`python scripts/make_env.py --ops-token` prints only a `POSTROOM_OPS_TOKEN=` line (the
Makefile appends it to a .env made before the token existed)."""

import secrets
import sys

# /metrics and /health/detailed fail closed outside POSTROOM_ENVIRONMENT=development: a token
# is made here so Compose (which runs with POSTROOM_ENVIRONMENT=production) can serve them.
OPS_TOKEN_LINE = f"POSTROOM_OPS_TOKEN={secrets.token_urlsafe(32)}"
if sys.argv[1:] == ["--ops-token"]:
    print(OPS_TOKEN_LINE)
    sys.exit(0)

from cryptography.fernet import Fernet  # noqa: E402 (not needed for --ops-token)

print("# Local settings made by `make install`; never commit this file.")
print(f"POSTROOM_CREDENTIAL_KEYS={Fernet.generate_key().decode()}")
print(f"POSTROOM_NYLAS_WEBHOOK_SECRET={secrets.token_hex(24)}")
# Local mail servers (a Dovecot or a relay on this machine) are allowed here only; production
# leaves this empty so tenants cannot point IMAP/SMTP at internal addresses.
print("POSTROOM_ALLOWED_PRIVATE_MAIL_HOSTS=127.0.0.0/8,::1")
# The same for a local OAuth2 server behind a `generic` OAuth app.
print("POSTROOM_ALLOWED_PRIVATE_OAUTH_HOSTS=127.0.0.0/8,::1")
# The same for tenants' webhook endpoints (a receiver on this machine, plain http allowed).
print("POSTROOM_ALLOWED_PRIVATE_WEBHOOK_HOSTS=127.0.0.0/8,::1")
print(OPS_TOKEN_LINE)
