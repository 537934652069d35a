#!/usr/bin/env bash
# A database made by a previous release, for the upgrade test (tests/upgrade): the release's code is
# unpacked from git, migrated into a scratch PostgreSQL database, given the demo data (users, cells,
# readings, audit events) with its own commands, and dumped as plain SQL.
#   scripts/make_upgrade_fixture.sh REF        e.g. a release tag
# Needs PostgreSQL (ADMIN_URL, default postgres://postgres@127.0.0.1:5432/postgres) and this checkout's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
REF="${1:?name the previous release (a tag or commit)}"
ADMIN_URL="${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
COMMIT="$(git rev-parse --short=12 "$REF^{commit}")"
WORK="$(mktemp -d)"
DB="leuko_upgrade_fixture_$$"
DB_URL="${ADMIN_URL%/*}/$DB"
PY="$PWD/.venv/bin/python"
trap 'psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; rm -rf "$WORK"' EXIT
git archive "$COMMIT" | tar -x -C "$WORK"
psql "$ADMIN_URL" -qc "CREATE DATABASE $DB"
export DATABASE_URL="$DB_URL" SECRET_KEY="upgrade-fixture-not-secret" CELERY_BROKER_URL="filesystem://" \
       LEUKOPORTAL_VAR_DIR="$WORK/var" AUTO_CLASSIFY_UPLOADS=false DEMO_PASSWORD="upgrade-fixture-pass" LOG_LEVEL=WARNING
unset CACHE_URL
(cd "$WORK" && "$PY" manage.py migrate --noinput >/dev/null && "$PY" manage.py seed_demo >/dev/null)
OUT="tests/upgrade/fixtures/release-$COMMIT.sql"
pg_dump --no-owner --no-privileges --format=plain "$DB_URL" > "$OUT"
gzip -9nf "$OUT"
echo "$OUT.gz: made by $REF ($COMMIT)"
