#!/usr/bin/env bash
# Make sure the real Postgres and Redis the tests use are up; start them if not, fail loudly if that fails.
# The tests never skip for a missing service: they need these.
set -euo pipefail
PGHOST=${BINWATCH_TEST_PG_HOST:-127.0.0.1}
PGPORT=${BINWATCH_TEST_PG_PORT:-5432}
REDIS_PORT=${BINWATCH_TEST_REDIS_PORT:-6379}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

if ! port_open "$PGHOST" "$PGPORT"; then
  echo "ensure-services: PostgreSQL not reachable on $PGHOST:$PGPORT, starting it" >&2
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
  wait_port "$PGHOST" "$PGPORT" || { echo "ensure-services: FAILED to start PostgreSQL on $PGHOST:$PGPORT" >&2; exit 1; }
fi

if ! port_open 127.0.0.1 "$REDIS_PORT"; then
  echo "ensure-services: Redis not reachable on 127.0.0.1:$REDIS_PORT, starting it" >&2
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_port 127.0.0.1 "$REDIS_PORT" || { echo "ensure-services: FAILED to start Redis on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
fi
echo "ensure-services: PostgreSQL $PGHOST:$PGPORT and Redis 127.0.0.1:$REDIS_PORT are up"
