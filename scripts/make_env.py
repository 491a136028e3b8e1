"""Print a .env for local use: a fresh credential key and a local webhook secret."""

import secrets

from cryptography.fernet import Fernet

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
