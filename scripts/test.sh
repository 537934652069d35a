#!/usr/bin/env bash
# The whole suite against real PostgreSQL and Redis (started by `make services`).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/leukoportal}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/14}"
export CACHE_URL="${TEST_CACHE_URL:-redis://127.0.0.1:6379/13}"
export SECRET_KEY="test-secret-key-not-for-production"
export DEBUG=false SECURE_SSL_REDIRECT=false SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false
export ALLOWED_HOSTS="testserver,127.0.0.1,localhost"
export LEUKOPORTAL_VAR_DIR="${LEUKOPORTAL_VAR_DIR:-$PWD/var/test}"
export TORCH_HOME="${TORCH_HOME:-$LEUKOPORTAL_VAR_DIR/torch}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
mkdir -p test-output
# The import contracts (.importlinter: layers of the apps; classifier.ml and slides.detection free of Django).
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
