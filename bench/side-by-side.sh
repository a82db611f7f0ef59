#!/usr/bin/env bash
# This service and the stock Backstage catalog backend side by side: both on
# the local PostgreSQL, the same generated catalog, one load driver sending
# the GraphQL scenarios to this service and the matching REST calls to
# Backstage (by-ref / backstage-by-ref, batch-related / backstage-batch,
# page-related / backstage-page), one scenario at a time.
#
#   BACKSTAGE_REFERENCE_DIR=DIR bench/side-by-side.sh [--entities 10000] [--seconds 10]
#                                                     [--concurrency 1,16] [--out bench/results]
#
# DIR is an installed Backstage catalog backend that `node index.js --config
# app-config.yaml --config app-config.pg.yaml` starts on the catalog file named
# by CATALOG_LOCATION, at REFERENCE_PORT, on the PostgreSQL named by
# REFERENCE_PG_HOST/PORT/USER/PASSWORD (database backstage_plugin_catalog).
# Backstage runs with its default processing interval (minutes, not the
# seconds a development setup uses), so that its refresh loop does not run
# beside the timing, and its tables are ANALYZEd after ingestion (this
# service ANALYZEs after bulk writes; Backstage leaves it to autovacuum).
# Writes <out>/postgres-<N>-backstage.json and .md (bench/run.sh's format).
set -euo pipefail
cd "$(dirname "$0")/.."

entities=10000
seconds=10
concurrency=1,16
out=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --entities) entities=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
reference=${BACKSTAGE_REFERENCE_DIR:?set BACKSTAGE_REFERENCE_DIR to an installed Backstage catalog backend}
# Both over plain TCP: Backstage's pg client uses no TLS unless configured
# to, while sqlx prefers TLS whenever the server offers it (this machine's
# does), which costs this service and PostgreSQL CPU that Backstage's
# connection does not pay.
admin_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}

cargo build --locked --release -p catalog-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
trap 'kill "${backstage_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
# The same seed and layout as bench/run.sh: the same catalog.
"$target_dir/release/catalog-bench" generate --entities "$entities" --seed 1 --out "$work/catalog" > /dev/null

psql "$admin_url" -qc 'DROP DATABASE IF EXISTS backstage_plugin_catalog WITH (FORCE)'
cat > "$work/quiet.yaml" <<'YAML'
catalog:
  processingInterval: { minutes: 30 }
YAML
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(
  cd "$reference"
  export REFERENCE_PORT=$port CATALOG_LOCATION="$work/catalog/catalog-info.yaml"
  export REFERENCE_PG_HOST=127.0.0.1 REFERENCE_PG_PORT=5432 REFERENCE_PG_USER=postgres REFERENCE_PG_PASSWORD=
  exec node index.js --config app-config.yaml --config app-config.pg.yaml --config "$work/quiet.yaml"
) > "$work/backstage.log" 2>&1 &
backstage_pid=$!

# Ingested when every generated entity is served and the count has held for
# ten seconds (stitching trails processing).
started=$(date +%s)
last=-1
steady=0
while [ "$steady" -lt 10 ]; do
  sleep 1
  kill -0 "$backstage_pid" || { tail -20 "$work/backstage.log"; exit 1; }
  count=$(curl -sf "http://127.0.0.1:$port/api/catalog/entities/by-query?limit=1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("totalItems", 0))' 2>/dev/null || echo 0)
  if [ "$count" -ge "$entities" ] && [ "$count" = "$last" ]; then steady=$((steady + 1)); else steady=0; fi
  last=$count
done
echo "Backstage served $count entities $(( $(date +%s) - started - 10 )) s after it started"
admin_base=${admin_url%%\?*}
psql "${admin_base%/*}/backstage_plugin_catalog${admin_url#"$admin_base"}" -qc 'ANALYZE'

bench/run.sh --entities "$entities" --database postgres --seconds "$seconds" --concurrency "$concurrency" \
  --out "$out" --tag backstage --backstage "http://127.0.0.1:$port" \
  --scenarios by-ref,backstage-by-ref,batch-related,backstage-batch,page-related,backstage-page
