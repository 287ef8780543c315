#!/usr/bin/env bash
# Check install.sh and the units under real systemd, in a throwaway container of the pair's base image
# (built by `make up`; nothing is pulled). The container has no network and publishes no port.
#
#   docker/standin/dev/systemd-check.sh [IMAGE]
#
# It installs the stand-in, seeds, starts the three units, reloads mastodon-web under traffic (BOOT_SECONDS=2),
# checks the MainPID is kept and no request failed, runs tootctl, quiets and stops Sidekiq, then removes the
# container.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
IMG="${1:-$(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^mastomig-base:' | head -n1)}"
[ -n "$IMG" ] || { echo "no mastomig-base image: run make up first, or pass an image" >&2; exit 2; }
NAME="standin-systemd-check-$$"
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$NAME" --network none --stop-signal SIGRTMIN+3 --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$HERE:/opt/standin-src:ro" "$IMG" /lib/systemd/systemd >/dev/null
for _ in $(seq 60); do
  s="$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)"
  case "$s" in running|degraded) break ;; esac
  sleep 0.5
done
docker exec -i "$NAME" bash -s <<'EOF'
set -euo pipefail
bash /opt/standin-src/install.sh
runuser -u postgres -- psql -qAt -c "CREATE ROLE mastodon LOGIN CREATEDB PASSWORD 'pw'" \
  -c "CREATE DATABASE mastodon_production OWNER mastodon"
install -m 600 -o mastodon -g mastodon /dev/stdin /home/mastodon/live/.env.production <<ENV
LOCAL_DOMAIN=social.test
DB_HOST=127.0.0.1
DB_PORT=5432
DB_NAME=mastodon_production
DB_USER=mastodon
DB_PASS=pw
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
TRUSTED_PROXY_IP=
S3_ENABLED=false
BOOT_SECONDS=2
ENV
runuser -l mastodon -c 'cd live && export RAILS_ENV=production && bundle exec rails db:schema:load &&
  SEED_SIZE=small bundle exec rails mastodon:seed_standin | tail -n1 && bundle exec rails assets:precompile >/dev/null'
systemctl start mastodon-web mastodon-sidekiq mastodon-streaming
for _ in $(seq 60); do
  curl -fs http://127.0.0.1:3000/health >/dev/null && curl -fs http://127.0.0.1:4000/api/v1/streaming/health >/dev/null && break
  sleep 0.5
done
systemctl is-active mastodon-web mastodon-sidekiq mastodon-streaming
P1=$(systemctl show -p MainPID --value mastodon-web)
codes=$(mktemp)
( for _ in $(seq 40); do curl -s -o /dev/null -w '%{http_code}\n' -H Host:social.test -H X-Forwarded-Proto:https \
    http://127.0.0.1:3000/api/v1/instance; sleep 0.1; done > "$codes" ) &
sleep 0.5
systemctl reload mastodon-web
wait
P2=$(systemctl show -p MainPID --value mastodon-web)
echo "reload: MainPID $P1 -> $P2; responses: $(sort "$codes" | uniq -c | tr '\n' ' ')"
[ "$P1" = "$P2" ] && [ "$(grep -vc '^200$' "$codes" || true)" = 0 ]
runuser -l mastodon -c 'cd live && RAILS_ENV=production bin/tootctl feeds build --all | tail -n1'
systemctl kill -s TSTP mastodon-sidekiq
sleep 11
for p in $(redis-cli smembers processes); do echo "sidekiq quiet=$(redis-cli hget "$p" quiet)"; done
systemctl stop mastodon-sidekiq
echo "sidekiq stopped: status=$(systemctl show -p ExecMainStatus --value mastodon-sidekiq), processes=$(redis-cli scard processes)"
echo "systemd check: OK"
EOF
