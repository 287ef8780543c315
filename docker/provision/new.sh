#!/usr/bin/env bash
# Provision `new`: a fresh host as the operator leaves it after Mastodon's install guide, up to the setup
# wizard: default empty PostgreSQL 15 cluster running, nginx with its default site, empty Redis, the same
# stand-in code in /home/mastodon/live, units installed but stopped and disabled, no .env.production,
# no certificates, no assets.
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
systemctl is-active --quiet postgresql@15-main nginx redis-server ssh
echo "new: provisioned"
