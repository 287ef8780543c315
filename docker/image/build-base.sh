#!/usr/bin/env bash
# Build the base rootfs of the simulated hosts with mmdebstrap and import it into Docker.
# No container registry is used: packages come from this machine's own apt sources, with only the suite
# changed (written to a temporary sources file, so no mirror name is in the repository).
#   usage: build-base.sh SUITE OUTPUT_TAR IMAGE_TAG        (SUITE: bookworm or trixie)
# The image tag is chosen by docker/pair.py as the suite + a hash of this script, packages.txt and files/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
suite="$1"; out="$2"; tag="$3"
case "$suite" in bookworm|trixie) ;; *) echo "build-base.sh: unknown suite '$suite'" >&2; exit 2 ;; esac

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
[ -f "$sources" ] || { echo "no apt sources file on this machine" >&2; exit 1; }

# This machine's suite (e.g. bookworm) in its sources file becomes SUITE (bookworm-updates -> SUITE-updates,
# bookworm-security -> SUITE-security).
. /etc/os-release
host_suite="${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}"
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
case "$sources" in
  *.sources) tmp_sources="$tmpdir/debian.sources" ;;   # mmdebstrap reads deb822 by the file name's ending
  *)         tmp_sources="$tmpdir/sources.list" ;;
esac
# Only the words of `Suites:` lines (deb822) and `deb` lines (one-line format) that are this machine's suite
# or its -updates/-security/-backports change; URIs, components and keys stay.
awk -v from="$host_suite" -v to="$suite" '
  /^[[:space:]]*#/ { print; next }
  /^Suites:/ || /^deb(-src)?[[:space:]]/ {
    for (i = 1; i <= NF; i++) if ($i ~ ("^" from "(-updates|-security|-backports)?$")) sub("^" from, to, $i)
  }
  { print }' "$sources" > "$tmp_sources"
if ! grep -qE "(^|[[:space:]])${suite}([[:space:]]|\$)" "$tmp_sources"; then
  echo "build-base.sh: no '$suite' suite in the rewritten sources:" >&2; cat "$tmp_sources" >&2; exit 1
fi
echo "build-base.sh: suite $suite (this machine: $host_suite), sources from $sources"

includes="$(grep -v '^\s*#' "$here/packages.txt" | tr -s ' \n' '\n' | grep -v '^$' | paste -sd, -)"

aptopts=()
# Reuse this machine's apt.conf snippets that matter for reaching its mirrors
# (e.g. Check-Valid-Until for snapshot mirrors, proxies).
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] || continue
  if grep -qiE 'Check-Valid-Until|Check-Date|Proxy' "$f"; then aptopts+=(--aptopt="$f"); fi
done

# systemd >= 256 (trixie) refuses to boot on a cgroup v1 host unless told so on its "kernel command line",
# which in a container is PID 1's own argv; systemd 252 (bookworm) ignores the word.
cmd='CMD ["/sbin/init"]'
[ "$suite" = bookworm ] || cmd='CMD ["/sbin/init", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"]'

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
  --customize-hook='chroot "$1" systemctl disable pgbouncer.service' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='rm -f "$1"/etc/machine-id && touch "$1"/etc/machine-id' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$suite" "$tmp" "$tmp_sources"
mv "$tmp" "$out"
docker import -c "$cmd" -c 'ENV container=docker' "$out" "$tag"
