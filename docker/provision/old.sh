#!/usr/bin/env bash
# Provision `old`: a running Mastodon host. Stand-in installed in /home/mastodon/live, PostgreSQL primary with
# the seeded database, .env.production, certbot-style certificate from the test CA, nginx site shaped like
# Mastodon's dist/nginx.conf, units enabled and active. PAIR_PROFILE (docker/README.md):
#   default  Debian 12, PostgreSQL 15 cluster 15/main, peer authentication over the socket, pgtune'd settings,
#            Redis without a password;
#   variant  Debian 13, PostgreSQL 17 cluster 17/social in /srv/pgdata (the package's 17/main dropped),
#            Mastodon through PgBouncer (127.0.0.1:6432, transaction pooling) with a SCRAM password,
#            PREPARED_STATEMENTS=false, Redis with a password, REDIS_URL (db 0), SIDEKIQ_REDIS_URL (db 1),
#            REDIS_NAMESPACE=social.
# Secrets (database and Redis passwords, the SCRAM verifier) are generated here and never printed nor put on a
# command line: they go through files, stdin and environment variables (REDISCLI_AUTH) only.
. /opt/mastomig/provision/lib.sh
DOMAIN="${DOMAIN:-social.test}"
SEED_SIZE="${SEED_SIZE:-small}"
PAIR_PROFILE="${PAIR_PROFILE:-default}"
ENVFILE=/home/mastodon/live/.env.production

database() {
  if [ "$PAIR_PROFILE" = default ]; then guide_database; else password_database; fi
}

pg_cluster_layout() {
  # variant: the admin replaced the package's <major>/main by a cluster named `social` whose data directory
  # is /srv/pgdata (outside /var/lib/postgresql, and not named after the cluster); Debian's settings
  # otherwise (port 5432, wal_level replica, listen_addresses localhost).
  if [ "$PAIR_PROFILE" = default ]; then return 0; fi
  local v
  v="$(pg_major)"
  if pg_lsclusters -h | awk -v v="$v" '$1 == v && $2 == "main" { f = 1 } END { exit !f }'; then
    pg_dropcluster --stop "$v" main
  fi
  if ! pg_lsclusters -h | awk -v v="$v" '$1 == v && $2 == "social" { f = 1 } END { exit !f }'; then
    pg_createcluster "$v" social -d /srv/pgdata -p 5432 --start
  fi
  [ "$(pg_cluster)" = "$v social" ]
  systemctl is-active --quiet "postgresql@$v-social"
}

guide_database() {
  # As Mastodon's install guide: `CREATE USER mastodon CREATEDB;` (no password), and the setup wizard's
  # answers: the socket directory as DB_HOST, an empty DB_PASS; Mastodon logs in by peer authentication.
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt <<'SQL'
SELECT 'CREATE USER mastodon CREATEDB'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mastodon') \gexec
SELECT 'CREATE DATABASE mastodon_production OWNER mastodon'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'mastodon_production') \gexec
SQL
  write_env "" /var/run/postgresql
}

pgtune() {
  # What pgtune proposes for a small server (web application, 4 GB, 2 CPUs), as admins commonly paste it,
  # with every setting a hot standby must match raised above Debian's defaults (which `new` keeps).
  if [ "$PAIR_PROFILE" != default ]; then return 0; fi
  cat > "$(pg_confdir)/conf.d/pgtune.conf" <<CONF
# pgtune: DB version $(pg_major), OS Linux, DB type web, 4 GB RAM, 2 CPUs, SSD
max_connections = 200
shared_buffers = 256MB
effective_cache_size = 768MB
maintenance_work_mem = 64MB
checkpoint_completion_target = 0.9
wal_buffers = 7864kB
default_statistics_target = 100
random_page_cost = 1.1
effective_io_concurrency = 200
work_mem = 655kB
max_worker_processes = 16
max_parallel_workers_per_gather = 1
max_parallel_workers = 2
max_parallel_maintenance_workers = 1
# raised by the admin for extensions and tools
max_wal_senders = 16
max_locks_per_transaction = 128
max_prepared_transactions = 16
CONF
  systemctl restart "$(pg_unit)"
}

password_database() {
  # The password is generated here and kept only in .env.production (and PostgreSQL's catalog).
  local pass
  if [ -f "$ENVFILE" ]; then
    pass="$(sed -n 's/^DB_PASS=//p' "$ENVFILE")"
  else
    pass="$(openssl rand -hex 24)"
  fi
  # the password reaches psql on stdin (a psql variable), never on a command line; stored as a SCRAM verifier
  # (password_encryption's default)
  {
    printf '%s\n' "\\set pass '$pass'"
    cat <<'SQL'
SELECT format('CREATE ROLE mastodon LOGIN CREATEDB PASSWORD %L', :'pass')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mastodon') \gexec
ALTER ROLE mastodon PASSWORD :'pass';
SELECT 'CREATE DATABASE mastodon_production OWNER mastodon'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'mastodon_production') \gexec
SQL
  } | runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt
  write_env "$pass" 127.0.0.1
}

redis_password() {
  # variant: `requirepass` in /etc/redis/redis.conf (kept there and in .env.production only)
  if [ "$PAIR_PROFILE" = default ]; then return 0; fi
  local pass
  pass="$(sed -n 's/^requirepass //p' /etc/redis/redis.conf | tail -n 1)"
  [ -n "$pass" ] || pass="$(openssl rand -hex 24)"
  sed -i '/^requirepass /d' /etc/redis/redis.conf
  printf 'requirepass %s\n' "$pass" >> /etc/redis/redis.conf   # printf is a builtin: not on any command line
  systemctl restart redis-server
  for _ in $(seq 1 50); do
    if [ "$(REDISCLI_AUTH="$pass" redis-cli --no-auth-warning ping 2>/dev/null)" = PONG ]; then break; fi
    sleep 0.2
  done
  [ "$(REDISCLI_AUTH="$pass" redis-cli --no-auth-warning ping)" = PONG ]
  # without the password Redis refuses
  local out
  out="$(redis-cli ping 2>&1 || true)"
  [[ "$out" == *NOAUTH* ]]
}

pgbouncer_setup() {
  # variant: Debian's PgBouncer in front of PostgreSQL, as Mastodon's scaling guide sets it up (transaction
  # pooling, port 6432), with SCRAM pass-through: userlist.txt holds the role's verifier from pg_authid, so
  # PgBouncer checks the client's password and logs in to PostgreSQL with the same SCRAM keys.
  if [ "$PAIR_PROFILE" = default ]; then return 0; fi
  local verifier tmp
  verifier="$(runuser -u postgres -- psql -qAtX -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'mastodon'")"
  case "$verifier" in
    'SCRAM-SHA-256$'*) ;;
    *) echo "the role mastodon has no SCRAM verifier" >&2; return 1 ;;
  esac
  tmp="$(mktemp)"
  printf '"mastodon" "%s"\n' "$verifier" > "$tmp"
  install -m 640 -o postgres -g postgres "$tmp" /etc/pgbouncer/userlist.txt
  rm -f "$tmp"
  install -m 640 -o postgres -g postgres /dev/stdin /etc/pgbouncer/pgbouncer.ini <<'INI'
;; Written by the simulated pair's provisioning (docker/provision/old.sh): PgBouncer as Mastodon's scaling
;; guide sets it up, in front of the local PostgreSQL.
[databases]
mastodon_production = host=127.0.0.1 port=5432 dbname=mastodon_production

[pgbouncer]
logfile = /var/log/postgresql/pgbouncer.log
pidfile = /var/run/postgresql/pgbouncer.pid
listen_addr = 127.0.0.1
listen_port = 6432
unix_socket_dir = /var/run/postgresql
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
;; the admin console: `sudo -u postgres psql -h /var/run/postgresql -p 6432 -U pgbouncer pgbouncer`
;; (the user pgbouncer logs in without a password over the socket from the UID PgBouncer runs as)
admin_users = pgbouncer
stats_users = pgbouncer
pool_mode = transaction
max_client_conn = 100
default_pool_size = 20
;; PgBouncer >= 1.21 can track protocol-level prepared statements in transaction mode; 0 keeps the behaviour
;; Mastodon's docs describe (and the stand-in models): PREPARED_STATEMENTS=false is required
max_prepared_statements = 0
INI
  systemctl enable --now pgbouncer.service
  systemctl restart pgbouncer.service   # re-read userlist.txt on a re-run
  for _ in $(seq 1 50); do
    if pg_isready -q -h 127.0.0.1 -p 6432; then break; fi
    sleep 0.2
  done
  pg_isready -q -h 127.0.0.1 -p 6432
  runuser -u postgres -- psql -qAtX -h /var/run/postgresql -p 6432 -U pgbouncer pgbouncer -c 'SHOW POOLS' \
    >/dev/null
}


write_env() {
  local pass="$1" host="$2" tmp rpass
  tmp="$(mktemp)"
  if [ "$PAIR_PROFILE" = default ]; then
    cat > "$tmp" <<ENV
# Generated by the simulated pair's provisioning (docker/provision/old.sh)
LOCAL_DOMAIN=$DOMAIN
SINGLE_USER_MODE=false
SECRET_KEY_BASE=$(openssl rand -hex 64)
OTP_SECRET=$(openssl rand -hex 64)

DB_HOST=$host
DB_PORT=5432
DB_NAME=mastodon_production
DB_USER=mastodon
DB_PASS=$pass

REDIS_HOST=127.0.0.1
REDIS_PORT=6379
ENV
  else
    rpass="$(sed -n 's/^requirepass //p' /etc/redis/redis.conf | tail -n 1)"
    [ -n "$rpass" ] || { echo "no requirepass in /etc/redis/redis.conf" >&2; return 1; }
    cat > "$tmp" <<ENV
# Generated by the simulated pair's provisioning (docker/provision/old.sh)
LOCAL_DOMAIN=$DOMAIN
SINGLE_USER_MODE=false
SECRET_KEY_BASE=$(openssl rand -hex 64)
OTP_SECRET=$(openssl rand -hex 64)

# through PgBouncer (transaction pooling); migrations go to PostgreSQL directly with DB_PORT=5432
DB_HOST=$host
DB_PORT=6432
DB_NAME=mastodon_production
DB_USER=mastodon
DB_PASS=$pass
PREPARED_STATEMENTS=false

# set up before Mastodon 4.3, kept since
REDIS_NAMESPACE=social
REDIS_URL=redis://:$rpass@127.0.0.1:6379/0
SIDEKIQ_REDIS_URL=redis://:$rpass@127.0.0.1:6379/1
ENV
  fi
  cat >> "$tmp" <<ENV

# Loopback only (nginx on this host). Left empty, Rails-like trust of private ranges would make the other
# host trusted here, unlike real hosts that talk over public addresses.
TRUSTED_PROXY_IP=127.0.0.1/8,::1/128
S3_ENABLED=false
# The stand-in's web boots like Puma: each start or reload takes 10 s, so a failover that restarts it shows
BOOT_SECONDS=10
ENV
  if [ -f "$STANDIN_SRC/env.production.extra" ]; then
    # Settings the stand-in documents as needed beyond Mastodon's.
    cat "$STANDIN_SRC/env.production.extra" >> "$tmp"
  fi
  install -m 600 -o mastodon -g mastodon "$tmp" "$ENVFILE"
  rm -f "$tmp"
}

# The stand-in's commands, as documented in docker/standin/README.md. Behind PgBouncer, the schema is loaded
# (like migrations) on PostgreSQL's own port, as Mastodon's docs say: DB_PORT=5432 in the command's environment.
direct_db() { if [ "$PAIR_PROFILE" = default ]; then echo ""; else echo "DB_PORT=5432 "; fi; }
schema() { as_mastodon "$(direct_db)bundle exec rails db:schema:load"; }
seed()   { as_mastodon "$(direct_db)SEED_SIZE=$SEED_SIZE SEED_TEXT_BYTES=${SEED_TEXT_BYTES:-180} bundle exec rails mastodon:seed_standin"; }
assets() { as_mastodon "bundle exec rails assets:precompile"; }

certificate() {
  # certbot layout: live/ symlinks into archive/*1.pem, a renewal config, private key 0600.
  local live=/etc/letsencrypt/live/$DOMAIN arch=/etc/letsencrypt/archive/$DOMAIN
  install -d -m 755 /etc/letsencrypt /etc/letsencrypt/renewal
  install -d -m 700 /etc/letsencrypt/live /etc/letsencrypt/archive
  install -d -m 755 "$live" "$arch"
  install -m 644 "$SRC/tls/cert.pem" "$arch/cert1.pem"
  install -m 644 "$SRC/tls/chain.pem" "$arch/chain1.pem"
  install -m 644 "$SRC/tls/fullchain.pem" "$arch/fullchain1.pem"
  install -m 600 "$SRC/tls/privkey.pem" "$arch/privkey1.pem"
  for f in cert chain fullchain privkey; do
    ln -sfn "../../archive/$DOMAIN/${f}1.pem" "$live/$f.pem"
  done
  cat > "/etc/letsencrypt/renewal/$DOMAIN.conf" <<CONF
# renew_before_expiry = 30 days
version = 2.1.0
archive_dir = $arch
cert = $live/cert.pem
privkey = $live/privkey.pem
chain = $live/chain.pem
fullchain = $live/fullchain.pem

# Options used in the renewal process
[renewalparams]
account = 00000000000000000000000000000000
authenticator = nginx
installer = nginx
server = https://acme.invalid/directory
key_type = ecdsa
CONF
}

nginx_site() {
  sed "s/@DOMAIN@/$DOMAIN/g" "$SRC/provision/nginx-mastodon.conf" > "/etc/nginx/sites-available/$DOMAIN"
  ln -sfn "/etc/nginx/sites-available/$DOMAIN" "/etc/nginx/sites-enabled/$DOMAIN"
  rm -f /etc/nginx/sites-enabled/default      # as Mastodon's install guide does
  install -d /var/cache/nginx
  nginx -t -q
  systemctl reload nginx
}

units_on() {
  systemctl daemon-reload
  systemctl enable --now mastodon-web.service mastodon-sidekiq.service mastodon-streaming.service
  wait_http http://127.0.0.1:3000/health
  wait_http http://127.0.0.1:4000/api/v1/streaming/health
  wait_http "https://$DOMAIN/health" --resolve "$DOMAIN:443:127.0.0.1"
}

step admin-user admin_user
step trust-ca trust_ca
step install-standin install_standin
step pg-cluster pg_cluster_layout
step pgtune pgtune
step redis-password redis_password
step database database
step pgbouncer pgbouncer_setup
step schema schema
step seed seed
step assets assets
step certificate certificate
step nginx-site nginx_site
step units-on units_on
systemctl is-active --quiet "$(pg_unit)" nginx redis-server ssh mastodon-web mastodon-sidekiq mastodon-streaming
if [ "$PAIR_PROFILE" = default ]; then
  ! systemctl is-active --quiet pgbouncer
else
  systemctl is-active --quiet pgbouncer
fi
echo "old: provisioned"
