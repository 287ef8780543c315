#!/usr/bin/env bash
# Run the stand-in on this machine for development, against a private PostgreSQL and Redis on 127.0.0.1.
#
#   docker/standin/dev/local.sh up [SIZE]   start PostgreSQL (:55432) and Redis (:56379), install the app into
#                                           $DEV/live, load the schema, seed (default small), precompile assets
#   docker/standin/dev/local.sh start       start web (:53000), sidekiq, streaming (:54000) in the background
#   docker/standin/dev/local.sh stop        stop the three app processes
#   docker/standin/dev/local.sh down        stop everything and delete $DEV
#   docker/standin/dev/local.sh env         print the environment to use the app's commands by hand
#
# DEV defaults to /tmp/standin-dev. Logs: $DEV/log/*.log. Nothing listens on anything but 127.0.0.1.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DEV="${DEV:-/tmp/standin-dev}"
PGPORT="${PGPORT:-55432}"
REDISPORT="${REDISPORT:-56379}"
WEBPORT="${WEBPORT:-53000}"
STREAMPORT="${STREAMPORT:-54000}"
PGBIN="/usr/lib/postgresql/$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)/bin"   # 15 on Debian 12, 17 on 13
LIVE="$DEV/live"
PY=/usr/bin/python3

pg_up() {
  mkdir -p "$DEV"
  if [ ! -d "$DEV/pg" ]; then
    install -d -o postgres -g postgres "$DEV/pg"
    echo postgres > "$DEV/pg.pw"; chown postgres "$DEV/pg.pw"
    runuser -u postgres -- "$PGBIN/initdb" -D "$DEV/pg" -A scram-sha-256 --pwfile="$DEV/pg.pw" -U postgres >/dev/null
    rm -f "$DEV/pg.pw"
  fi
  if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DEV/pg" status >/dev/null 2>&1; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DEV/pg" -l "$DEV/pg/server.log" -w \
      -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DEV/pg" start >/dev/null
  fi
  PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qAt -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE mastodon LOGIN CREATEDB PASSWORD ''devpass''' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname='mastodon') \gexec
SELECT 'CREATE DATABASE mastodon_production OWNER mastodon' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname='mastodon_production') \gexec
SQL
}

redis_up() {
  mkdir -p "$DEV/redis"
  if ! redis-cli -p "$REDISPORT" ping >/dev/null 2>&1; then
    redis-server --port "$REDISPORT" --bind 127.0.0.1 --daemonize yes --dir "$DEV/redis" \
      --logfile "$DEV/redis/redis.log" --save "" >/dev/null
    for _ in $(seq 50); do redis-cli -p "$REDISPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

install_app() {
  mkdir -p "$LIVE" "$DEV/log"
  tar -C "$HERE" --exclude=./tests --exclude=./dev --exclude=./install.sh --exclude=./REQUESTS.md \
      --exclude='__pycache__' -cf - . | tar -C "$LIVE" -xf -
  if [ ! -f "$LIVE/.env.production" ]; then
    cat > "$LIVE/.env.production" <<ENV
LOCAL_DOMAIN=social.test
DB_HOST=127.0.0.1
DB_PORT=$PGPORT
DB_NAME=mastodon_production
DB_USER=mastodon
DB_PASS=devpass
REDIS_HOST=127.0.0.1
REDIS_PORT=$REDISPORT
TRUSTED_PROXY_IP=
S3_ENABLED=false
SECRET_KEY_BASE=dev
ENV
  fi
}

run() { (cd "$LIVE" && RAILS_ENV=production "$@"); }

start_one() {  # name command...
  local name="$1"; shift
  if [ -f "$DEV/$name.pid" ] && ps -o stat= -p "$(cat "$DEV/$name.pid")" 2>/dev/null | grep -qv Z; then return 0; fi
  (cd "$LIVE"; nohup env "$@" >>"$DEV/log/$name.log" 2>&1 & echo $! > "$DEV/$name.pid")
}

stop_one() {
  local name="$1"
  if [ -f "$DEV/$name.pid" ]; then
    local pid; pid="$(cat "$DEV/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$DEV/$name.pid"
  fi
}

case "${1:-}" in
  up)
    pg_up; redis_up; install_app
    run "$PY" "$LIVE/bin/bundle" exec rails db:schema:load
    run "$PY" "$LIVE/bin/bundle" exec rails mastodon:seed_standin SEED_SIZE="${2:-small}"
    run "$PY" "$LIVE/bin/bundle" exec rails assets:precompile >/dev/null
    echo "up: $LIVE (PostgreSQL 127.0.0.1:$PGPORT, Redis 127.0.0.1:$REDISPORT)"
    ;;
  start)
    start_one web RAILS_ENV=production PORT="$WEBPORT" "$PY" "$LIVE/bin/bundle" exec puma -C config/puma.rb
    start_one sidekiq RAILS_ENV=production "$PY" "$LIVE/bin/bundle" exec sidekiq -c 5 -t "${SIDEKIQ_TIMEOUT:-5}"
    start_one streaming NODE_ENV=production PORT="$STREAMPORT" "$PY" ./streaming
    echo "started: web :$WEBPORT, streaming :$STREAMPORT (logs in $DEV/log)"
    ;;
  stop)
    for n in web sidekiq streaming; do stop_one "$n"; done
    ;;
  down)
    for n in web sidekiq streaming; do stop_one "$n"; done
    redis-cli -p "$REDISPORT" shutdown nosave >/dev/null 2>&1 || true
    [ -d "$DEV/pg" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DEV/pg" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$DEV"
    ;;
  env)
    echo "cd $LIVE && export RAILS_ENV=production WEBPORT=$WEBPORT STREAMPORT=$STREAMPORT REDISPORT=$REDISPORT PGPORT=$PGPORT"
    ;;
  *)
    sed -n '2,12p' "$0"; exit 2 ;;
esac
