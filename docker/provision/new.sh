#!/usr/bin/env bash
# Provision `new`: a fresh host as the operator leaves it after Mastodon's install guide, up to the setup
# wizard: the package's default empty PostgreSQL cluster (<major>/main: 15 on bookworm, 17 on trixie) running,
# nginx with its default site, empty Redis (no password), PgBouncer installed but disabled, the same stand-in
# code in /home/mastodon/live, units installed but stopped and disabled, no .env.production, no certificates,
# no assets. The same in both profiles (PAIR_PROFILE only chooses the Debian suite of the image).
. /opt/mastomig/provision/lib.sh

units_off() {
  systemctl daemon-reload
  for u in mastodon-web mastodon-sidekiq mastodon-streaming; do
    systemctl cat "$u.service" >/dev/null   # installed
    systemctl disable --now "$u.service" >/dev/null 2>&1 || true
  done
}

step admin-user admin_user
step trust-ca trust_ca
step install-standin install_standin
step units-off units_off
[ "$(pg_cluster)" = "$(pg_major) main" ]
systemctl is-active --quiet "$(pg_unit)" nginx redis-server ssh
! systemctl is-active --quiet pgbouncer
echo "new: provisioned"
