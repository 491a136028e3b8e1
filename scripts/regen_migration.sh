#!/usr/bin/env bash
# Regenerate the single initial migration from database/models.py (nothing is deployed yet).
# Serialised with flock so two people editing models at once do not race.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/postroom-regen.lock
flock 9
db="postroom_regen_$$"
psql -q -U postgres -h 127.0.0.1 -c "CREATE DATABASE $db" postgres
trap 'psql -q -U postgres -h 127.0.0.1 -c "DROP DATABASE IF EXISTS $db" postgres' EXIT
export POSTROOM_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/$db"
rm -f alembic/versions/*_initial_schema.py
.venv/bin/alembic revision --autogenerate --rev-id 0001 -m "initial schema" >/dev/null
sed -i '/^import sqlmodel$/d' alembic/versions/*_initial_schema.py
.venv/bin/alembic upgrade head >/dev/null
.venv/bin/alembic check
