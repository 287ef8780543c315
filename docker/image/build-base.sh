#!/usr/bin/env bash
# Build the base rootfs of the simulated hosts with mmdebstrap and import it into Docker.
# No container registry is used: packages come from this machine's own apt sources.
#   usage: build-base.sh OUTPUT_TAR IMAGE_TAG
# The image tag is chosen by docker/pair.py as a hash of this script + packages.txt + files/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$1"; tag="$2"

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -f "$sources" ] || { echo "no apt sources file on this machine" >&2; exit 1; }

includes="$(grep -v '^\s*#' "$here/packages.txt" | tr -s ' \n' '\n' | grep -v '^$' | paste -sd, -)"

aptopts=()
# Reuse this machine's apt.conf snippets that matter for reaching its mirrors
# (e.g. Check-Valid-Until for snapshot mirrors, proxies).
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] || continue
  if grep -qiE 'Check-Valid-Until|Check-Date|Proxy' "$f"; then aptopts+=(--aptopt="$f"); fi
done

mkdir -p "$(dirname "$out")"
tmp="$out.partial"
rm -f "$tmp"
mmdebstrap --variant=minbase --format=tar \
  --include="$includes" \
  "${aptopts[@]}" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook="cp -a '$here/files/.' \"\$1/\"" \
  --customize-hook='chroot "$1" systemctl mask getty@tty1.service console-getty.service' \
  --customize-hook='chroot "$1" systemctl enable ssh.service' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='rm -f "$1"/etc/machine-id && touch "$1"/etc/machine-id' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$tmp" "$sources"
mv "$tmp" "$out"
docker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' "$out" "$tag"
