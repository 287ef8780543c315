#!/usr/bin/env bash
# Install the stand-in Mastodon on a Debian 12 or 13 host, as root, from a copy of docker/standin/:
#
#   bash /opt/standin-src/install.sh
#
# Idempotent. It
#   - creates the user `mastodon` (home /home/mastodon, shell /bin/bash) if missing;
#   - installs the application into /home/mastodon/live (owned by mastodon), keeping whatever is there that it
#     does not ship: .env.production, public/system, public/assets, public/packs;
#   - installs `bundle` as /home/mastodon/.rbenv/shims/bundle (the path Mastodon's units use) and puts
#     ~/.rbenv/shims on mastodon's PATH for login shells (~/.profile) and interactive ones (~/.bashrc);
#   - copies dist/mastodon-{web,sidekiq,streaming}.service to /etc/systemd/system and runs
#     `systemctl daemon-reload` when systemd is running. It does NOT enable or start them.
# Needs: python3 with python3-psycopg2, python3-redis, python3-aiohttp (Debian packages).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
USER_NAME=mastodon
HOME_DIR=/home/mastodon
APP="$HOME_DIR/live"

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

missing=()
for mod in psycopg2:python3-psycopg2 redis:python3-redis aiohttp:python3-aiohttp; do
  /usr/bin/python3 -c "import ${mod%%:*}" 2>/dev/null || missing+=("${mod##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi

# 1. the user
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --create-home --home-dir "$HOME_DIR" --shell /bin/bash --user-group "$USER_NAME"
fi
install -d -o "$USER_NAME" -g "$USER_NAME" "$HOME_DIR"
chmod 711 "$HOME_DIR"   # nginx (www-data) must reach ~/live/public, as in Mastodon's install guide

# 2. the application
install -d -o "$USER_NAME" -g "$USER_NAME" "$APP"
for managed in standin bin dist streaming lib config; do rm -rf "${APP:?}/$managed"; done
tar -C "$SRC" \
  --exclude=./install.sh --exclude=./tests --exclude=./dev --exclude=./REQUESTS.md --exclude=./README.md \
  --exclude='__pycache__' --exclude='*.pyc' --exclude=./.env.production --exclude=./public/system \
  --exclude=./public/assets --exclude=./public/packs \
  -cf - . | tar -C "$APP" --no-same-owner -xf -
install -d -o "$USER_NAME" -g "$USER_NAME" "$APP/public" "$APP/public/system" "$APP/tmp" "$APP/log"
find "$APP" -path "$APP/public/system" -prune -o -exec chown -h "$USER_NAME:$USER_NAME" {} +
chmod 755 "$APP"/bin/* "$APP/streaming"
runuser -u "$USER_NAME" -- /usr/bin/python3 -m compileall -q "$APP/standin" >/dev/null || true

# 3. bundle on mastodon's PATH, where rbenv would put it
install -d -o "$USER_NAME" -g "$USER_NAME" "$HOME_DIR/.rbenv" "$HOME_DIR/.rbenv/shims" "$HOME_DIR/.rbenv/bin"
install -m 755 -o "$USER_NAME" -g "$USER_NAME" "$SRC/bin/bundle" "$HOME_DIR/.rbenv/shims/bundle"
for rc in .profile .bashrc; do
  f="$HOME_DIR/$rc"
  [ -f "$f" ] || install -m 644 -o "$USER_NAME" -g "$USER_NAME" /dev/null "$f"
  if ! grep -q 'standin: rbenv shims' "$f"; then
    printf '\n# standin: rbenv shims (bundle) on PATH, as rbenv init would do\nexport PATH="$HOME/.rbenv/shims:$HOME/.rbenv/bin:$PATH"\n' >> "$f"
  fi
done

# 4. systemd units (installed, not enabled, not started)
for unit in mastodon-web.service mastodon-sidekiq.service mastodon-streaming.service; do
  install -m 644 "$SRC/dist/$unit" "/etc/systemd/system/$unit"
done
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

echo "install.sh: stand-in Mastodon $(runuser -u "$USER_NAME" -- /usr/bin/python3 "$APP/bin/tootctl" version) installed in $APP"
