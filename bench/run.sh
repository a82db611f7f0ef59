#!/usr/bin/env bash
# The whole benchmark in one command: generate a synthetic catalog, measure a
# cold ingestion and an unchanged re-sync, start the server and drive load.
#
#   bench/run.sh --entities 10000 --database sqlite|postgres [--layout single|per-file] [--seconds 10] [--out bench/results]
#                [--scenarios dependencies,impact,...] [--tag NAME]
#                [--subscribe [--subscribers 100,1000] [--rate 100]] [--backstage URL]
#
# --scenarios runs some of the driver's scenarios (all by default); --tag adds
# "-NAME" to the result files' names so that a partial run keeps the full one.
#
# --subscribe runs the subscription benchmark instead of the re-sync and the
# load driver: each number of catalogChanges subscribers for --seconds while a
# writer commits --rate changes/s beside the server, into
# <database>-<entities>-subscribe[-tag].json and .md.
#
# --backstage URL: a stock Backstage catalog backend holding the same catalog
# (`catalog-bench generate --entities N --seed 1` writes it), for the
# backstage-* scenarios, which are named in --scenarios: see
# bench/results/README.md, "Side by side with Backstage".
#
# PostgreSQL: the server named by BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) gets a fresh database.
# --smoke: a debug build, 200 entities and one second per scenario (CI).
set -euo pipefail
cd "$(dirname "$0")/.."

entities=10000
database=sqlite
seconds=10
concurrency=1,8,32
out=bench/results
profile=release
layout=single
scenarios=""
tag=""
subscribe=false
subscribers=100,1000
rate=100
backstage=""
while [ $# -gt 0 ]; do
  case "$1" in
    --entities) entities=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --layout) layout=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --tag) tag="-$2"; shift 2 ;;
    --subscribe) subscribe=true; shift ;;
    --subscribers) subscribers=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --backstage) backstage=$2; shift 2 ;;
    --smoke) entities=200; seconds=1; concurrency=1,4; subscribers=10,50; profile=dev; out=$(mktemp -d); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

# Two builds, not one: built together, the server would get the store's
# `testing` feature that the bench tool enables (cargo unifies features of
# packages built in one invocation), and the benchmark would not measure the
# binary that ships.
cargo build --locked --profile "$profile" -p catalog-api --bin catalog
cargo build --locked --profile "$profile" -p catalog-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
work=$(mktemp -d)
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin_dir/catalog-bench" generate --entities "$entities" --seed 1 --layout "$layout" --out "$work/catalog" > /dev/null

case "$database" in
  sqlite) database_url="sqlite://$work/bench.db" ;;
  postgres)
    admin_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    name="catalog_bench_$$"
    psql "$admin_url" -q -c "CREATE DATABASE $name"
    trap 'kill "${server_pid:-0}" 2>/dev/null || true; sleep 1; psql "$admin_url" -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"; rm -rf "$work"' EXIT
    # The same server and options (`?sslmode=...`), another database.
    admin_base=${admin_url%%\?*}
    options=${admin_url#"$admin_base"}
    database_url="${admin_base%/*}/$name$options" ;;
  *) echo "--database is sqlite or postgres" >&2; exit 2 ;;
esac

export CATALOG_DATABASE__URL="$database_url"
export CATALOG_INGESTION__PROVIDERS="[{\"type\": \"file\", \"paths\": [\"$work/catalog/catalog-info.yaml\"]}]"
export CATALOG_LOG=warn
# The read and ingestion scenarios measure the catalog alone: the example
# scorecards' evaluation, admission policies and health recording would
# share the two cores with them (`catalog-bench governance` measures those).
export CATALOG_GOVERNANCE__ENABLED=false

ingest() {
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin_dir/catalog" ingest --once > "$work/ingest.out"
  read -r seconds_taken rss_kb < "$work/time"
  rows=$(sed -n 's/.*, \([0-9]*\) rows written/\1/p' "$work/ingest.out")
  echo "$seconds_taken $rss_kb $rows"
}
read -r cold_seconds cold_rss cold_rows < <(ingest)
if [ "$subscribe" = false ]; then
  read -r resync_seconds resync_rss resync_rows < <(ingest)
  echo "cold ingestion: ${cold_seconds}s, peak RSS ${cold_rss} KB, ${cold_rows} rows; re-sync: ${resync_seconds}s, ${resync_rows} rows"
fi

# Every subscriber is a socket in the driver and one in the server (which
# inherits this limit).
if [ "$subscribe" = true ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
  ulimit -n 4096 || echo "warning: cannot raise the open-file limit to 4096; 1,000 subscribers may fail" >&2
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CATALOG_INGESTION__ENABLED=false CATALOG_SERVER__PORT=$port "$bin_dir/catalog" serve > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 0.1
done

if [ "$subscribe" = true ]; then
  mkdir -p "$out"
  stem="$out/$database-$entities$([ "$layout" = single ] || echo "-$layout")-subscribe$tag"
  # Lost or duplicated events fail the driver after it wrote its figures:
  # they are kept, then the run fails.
  status=0
  "$bin_dir/catalog-bench" subscribe --url "http://127.0.0.1:$port/graphql" --database-url "$database_url" \
    --subscribers "$subscribers" --rate "$rate" --seconds "$seconds" --server-pid "$server_pid" \
    --out "$work/subscribe.json" || status=$?
  [ -f "$work/subscribe.json" ] || exit "$status"
  python3 - "$work" "$stem" <<PY
import json, os, sys, datetime
work, stem = sys.argv[1], sys.argv[2]
result = {
    "date": datetime.date.today().isoformat(),
    "cpus": os.cpu_count(),
    "database": "$database",
    "entities": $entities,
    "layout": "$layout",
    "subscribe": json.load(open(f"{work}/subscribe.json")),
}
json.dump(result, open(f"{stem}.json", "w"), indent=2)
lines = [f"# Subscriptions: {result['database']}, {result['entities']} entities ({result['date']}, {result['cpus']} CPUs)", "",
         "Subscribers to catalogChanges (one namespace) while a writer beside the server commits changes. Latency from "
         "the writer's commit returning to the subscriber reading the event; p99 from the write's start is its upper bound "
         "(early: events read before the writer's thread saw its commit return, counted as 0 ms)."]
if result["database"] == "sqlite":
    lines.append("On SQLite the server looks for other processes' commits twice a second: the latency is mostly that poll.")
lines += ["", "| subscribers | changes/s (target) | delivered | lost | duplicated | ended | p50 ms | p90 ms | p99 ms | max ms | early | p99 ms from write start | server RSS KiB before / after | KiB per idle subscriber | server CPU % | driver CPU % |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
fmt = lambda value, spec="": "-" if value is None else format(value, spec)
for m in result["subscribe"]:
    ended = m["ended_with_error"] + m["subscribers"] - m["connected"]
    lines.append(f"| {m['subscribers']} | {m['achieved_rate']:.1f} ({m['target_rate']}) | {m['events_delivered']} of {m['events_expected']} | "
                 f"{m['lost']} | {m['duplicated']} | {ended} | {m['latency_ms']['p50']:.2f} | {m['latency_ms']['p90']:.2f} | "
                 f"{m['latency_ms']['p99']:.2f} | {m['latency_ms']['max']:.2f} | {m['early_deliveries']} | {m['latency_from_write_start_ms']['p99']:.2f} | "
                 f"{fmt(m['rss_before_kib'])} / {fmt(m['rss_after_kib'])} | "
                 f"{fmt(m['rss_per_subscriber_kib'], '.1f')} | {fmt(m['server_cpu_percent'], '.0f')} | {fmt(m['driver_cpu_percent'], '.0f')} |")
    for error in m["errors"]:
        lines.append(f"\nEnded or failed at {m['subscribers']}: {error}")
open(f"{stem}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  exit "$status"
fi
idle_cpu=$(python3 - "$server_pid" <<'PY'
import os, sys, time
pid = sys.argv[1]
def ticks():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
start = ticks(); time.sleep(3); used = ticks() - start
print(round(100.0 * used / os.sysconf("SC_CLK_TCK") / 3, 2))
PY
)
"$bin_dir/catalog-bench" load --url "http://127.0.0.1:$port/graphql" --manifest "$work/catalog/manifest.json" \
  --seconds "$seconds" --concurrency "$concurrency" --out "$work/load.json" ${scenarios:+--scenarios "$scenarios"} \
  --database-url "$database_url" ${backstage:+--backstage-url "$backstage"}
server_rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")

mkdir -p "$out"
stem="$out/$database-$entities$([ "$layout" = single ] || echo "-$layout")$tag"
python3 - "$work" "$stem" <<PY
import json, os, sys, datetime
work, stem = sys.argv[1], sys.argv[2]
result = {
    "date": datetime.date.today().isoformat(),
    "cpus": os.cpu_count(),
    "database": "$database",
    "entities": $entities,
    "layout": "$layout",
    "ingestion": {
        "cold_seconds": $cold_seconds, "cold_entities_per_second": round($entities / max($cold_seconds, 0.001)),
        "cold_peak_rss_kb": $cold_rss, "cold_rows_written": $cold_rows,
        "resync_seconds": $resync_seconds, "resync_rows_written": $resync_rows,
    },
    "server": {"idle_cpu_percent_of_a_core": $idle_cpu, "rss_kb_after_load": $server_rss},
    "load": json.load(open(f"{work}/load.json")),
    "manifest": json.load(open(f"{work}/catalog/manifest.json"))["counts"],
}
json.dump(result, open(f"{stem}.json", "w"), indent=2)
lines = [f"# {result['database']}, {result['entities']} entities ({result['date']}, {result['cpus']} CPUs)", "",
         f"Cold ingestion {result['ingestion']['cold_seconds']} s ({result['ingestion']['cold_entities_per_second']} entities/s, "
         f"peak RSS {result['ingestion']['cold_peak_rss_kb'] // 1024} MB); unchanged re-sync {result['ingestion']['resync_seconds']} s, "
         f"{result['ingestion']['resync_rows_written']} rows written. Server idle CPU {result['server']['idle_cpu_percent_of_a_core']}% of a core, "
         f"RSS {result['server']['rss_kb_after_load'] // 1024} MB after the load.", "",
         "| scenario | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |", "|---|---|---|---|---|---|---|---|"]
for m in result["load"]:
    lines.append(f"| {m['scenario']} | {m['concurrency']} | {m['requests_per_second']:.0f} | {m['p50_ms']:.2f} | {m['p90_ms']:.2f} | {m['p99_ms']:.2f} | {m['max_ms']:.2f} | {m['errors']} |")
at_one = {m["scenario"]: m for m in result["load"] if m["concurrency"] == 1}
for api, sql in (("by-ref", "sql-by-ref"), ("page", "sql-page")):
    if api in at_one and sql in at_one:
        ratio = at_one[api]["p50_ms"] / max(at_one[sql]["p50_ms"], 0.001)
        lines.append(f"\nAPI overhead for {api} at concurrency 1: p50 {at_one[api]['p50_ms']:.2f} ms over HTTP and GraphQL "
                     f"vs {at_one[sql]['p50_ms']:.2f} ms for the hand-written SQL: {ratio:.1f}x.")
open(f"{stem}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
