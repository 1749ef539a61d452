#!/usr/bin/env bash
# Runs a command against a throwaway redis-server:
#   tools/with-redis.sh <command...>
# Starts redis-server on a free loopback port in a temp dir (appendonly yes, appendfsync
# always), waits for PING, exports for the command:
#   BUDGET_TEST_REDIS_URL   redis://127.0.0.1:<port>/0
#   REDIS_PORT, REDIS_DIR   the port and the server's data dir
#   REDIS_SERVER, REDIS_CLI the binaries (fault tests start their own instances with them)
#   REDIS_PIDFILE           the server's pid file
# stops the server in a trap and exits with the command's status. Fails loudly when
# redis-server is missing (CI installs it from Debian: apt-get install redis-server).
# BUDGET_REDIS_CLUSTER=1: the server runs in cluster mode, one node owning every slot, so
# Redis enforces that each function call touches keys of one slot only.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 <command...>" >&2
  exit 2
fi
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
REDIS_CLI="${REDIS_CLI:-$(command -v redis-cli || true)}"
if [ -z "$REDIS_SERVER" ] || [ ! -x "$REDIS_SERVER" ]; then
  echo "with-redis.sh: FATAL: redis-server not found (install the Debian package redis-server)" >&2
  exit 127
fi
if [ -z "$REDIS_CLI" ] || [ ! -x "$REDIS_CLI" ]; then
  echo "with-redis.sh: FATAL: redis-cli not found (install the Debian package redis-tools)" >&2
  exit 127
fi

REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/budget-redis.XXXXXX")"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
server_pid=""

cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$REDIS_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cluster_args=()
if [ "${BUDGET_REDIS_CLUSTER:-0}" = 1 ]; then
  cluster_args=(--cluster-enabled yes --cluster-config-file "$REDIS_DIR/nodes.conf")
fi

started=0
for attempt in 1 2 3 4 5; do
  REDIS_PORT="$(free_port)"
  "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --daemonize no \
    --appendonly yes --appendfsync always --save "" --pidfile "$REDIS_PIDFILE" \
    --logfile "$REDIS_DIR/redis.log" --protected-mode yes "${cluster_args[@]}" &
  server_pid=$!
  for _ in $(seq 1 100); do
    if "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG; then started=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  [ "$started" = 1 ] && break
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
done
if [ "$started" != 1 ]; then
  echo "with-redis.sh: FATAL: redis-server did not start; log:" >&2
  cat "$REDIS_DIR/redis.log" >&2 || true
  exit 1
fi

if [ "${BUDGET_REDIS_CLUSTER:-0}" = 1 ]; then
  "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
  ok=0
  for _ in $(seq 1 200); do
    if "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" CLUSTER INFO | grep -q '^cluster_state:ok'; then ok=1; break; fi
    sleep 0.05
  done
  if [ "$ok" != 1 ]; then
    echo "with-redis.sh: FATAL: the cluster node did not reach cluster_state:ok" >&2
    exit 1
  fi
fi

export BUDGET_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export REDIS_PORT REDIS_DIR REDIS_SERVER REDIS_CLI REDIS_PIDFILE
set +e
"$@"
status=$?
set -e
exit "$status"
