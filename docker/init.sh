#!/bin/sh
# The compose stack's one-shot `init`: recsys data load && recsys train && recsys features materialize.
# `recsys data load` refuses to load over existing rows, and a restarted stack must keep
# the interactions logged since its first start, so the load runs only into an empty database.
set -eu

set +e
python - <<'PY'
import os
import sys

from storage.bulk import is_empty
from storage.db import migrate

url = os.environ["DATABASE_URL"]
migrate(url)  # a fresh database has no tables to look at yet
sys.exit(0 if is_empty(url) else 10)
PY
status=$?
set -e

case "$status" in
  0) recsys data load ;;
  10) echo "init: PostgreSQL already holds data; not reloading (recsys data load --replace starts over)" ;;
  *) exit "$status" ;;
esac
recsys train
recsys features materialize
