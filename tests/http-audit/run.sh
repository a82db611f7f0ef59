#!/usr/bin/env bash
# Starts `catalog serve` on a scratch SQLite database and a free port, then
# runs the graphql-http audit against it.
#
#   tests/http-audit/run.sh PATH/TO/catalog
set -euo pipefail
binary=$(realpath "$1")
audit=$(cd "$(dirname "$0")" && pwd)
# The server reads the example catalog relative to the repository root.
cd "$audit/../.."

npm ci --prefix "$audit" --no-audit --no-fund --silent
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CATALOG_SERVER__PORT="$port" CATALOG_DATABASE__URL="sqlite://$work/audit.db" "$binary" serve > "$work/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.2
done
node "$audit/audit.mjs" "http://127.0.0.1:$port/graphql" || { cat "$work/server.log"; exit 1; }
