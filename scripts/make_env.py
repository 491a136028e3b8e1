"""Print a .env for local use: a fresh credential key and a local webhook secret."""

import secrets

from cryptography.fernet import Fernet

print("# Local settings made by `make install`; never commit this file.")
print(f"POSTROOM_CREDENTIAL_KEYS={Fernet.generate_key().decode()}")
print(f"POSTROOM_NYLAS_WEBHOOK_SECRET={secrets.token_hex(24)}")
