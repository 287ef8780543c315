# Shared helpers for the provisioning scripts; sourced, runs as root inside a host.
# Each step runs once: a marker in /var/lib/mastomig/steps/ records success, so a re-run after a partial
# failure resumes where it stopped.
set -euo pipefail
SRC=/opt/mastomig            # what pair.py copied in: provision/, ca.crt, admin.pub, tls/
STANDIN_SRC=/opt/standin-src
STEPS=/var/lib/mastomig/steps
mkdir -p "$STEPS"

step() {
  local name="$1"; shift
  if [ -e "$STEPS/$name" ]; then echo "step $name: done before"; return 0; fi
  local t0=$SECONDS
  echo "step $name: running"
  "$@"
  touch "$STEPS/$name"
  echo "step $name: ok ($((SECONDS - t0)) s)"
}

# Common to both hosts -------------------------------------------------------------------------------
admin_user() {
  id admin >/dev/null 2>&1 || useradd --create-home --shell /bin/bash admin
  usermod -p '*' admin   # no password, but not "locked": key login only
  install -d -m 700 -o admin -g admin /home/admin/.ssh
  install -m 600 -o admin -g admin "$SRC/admin.pub" /home/admin/.ssh/authorized_keys
  printf 'admin ALL=(ALL:ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/90-mastomig-admin
  chmod 440 /etc/sudoers.d/90-mastomig-admin
  visudo -cqf /etc/sudoers.d/90-mastomig-admin
}

trust_ca() {
  install -m 644 "$SRC/ca.crt" /usr/local/share/ca-certificates/mastomig-test-ca.crt
  update-ca-certificates >/dev/null 2>&1
}

install_standin() {
  [ -f "$STANDIN_SRC/install.sh" ] || { echo "no stand-in install.sh in $STANDIN_SRC" >&2; return 1; }
  bash "$STANDIN_SRC/install.sh"
  id mastodon >/dev/null
  [ -d /home/mastodon/live ]
}

# PostgreSQL: the installed major version and the host's cluster are found, never assumed (bookworm: 15,
# trixie: 17; variant old's cluster is not `main`).
pg_major() { ls /usr/lib/postgresql | sort -n | tail -n 1; }
pg_cluster() {   # "<version> <name>" of the cluster on port 5432 (the only one on these hosts)
  local c
  c="$(pg_lsclusters -h | awk '$3 == 5432 { print $1, $2; exit }')"
  [ -n "$c" ] || { echo "no PostgreSQL cluster on port 5432" >&2; pg_lsclusters >&2; return 1; }
  echo "$c"
}
pg_unit() { local v n; read -r v n <<<"$(pg_cluster)"; echo "postgresql@$v-$n"; }
pg_confdir() { local v n; read -r v n <<<"$(pg_cluster)"; echo "/etc/postgresql/$v/$n"; }

as_mastodon() {
  # Run a command line as the mastodon user in ~/live with a login environment (PATH has `bundle`).
  runuser -l mastodon -c "cd /home/mastodon/live && RAILS_ENV=production $*"
}

wait_http() {  # wait_http URL [curl args...]: until it answers 200, 60 s at most
  local url="$1"; shift
  for _ in $(seq 1 120); do
    if curl -fs -o /dev/null --max-time 2 "$@" "$url"; then return 0; fi
    sleep 0.5
  done
  echo "timeout waiting for $url" >&2
  curl -sS -i --max-time 2 "$@" "$url" >&2 || true
  return 1
}
