#!/usr/bin/env bash
# Puts cosign 2.x (Debian trixie's package) into a private folder and prints the path of the binary.
# Called by `pipeline.sign.ensure_cosign` when no cosign >= 2 is on PATH. It never touches the machine's
# apt sources or dpkg database: the package comes through a private apt configuration for trixie (as the
# engine's docker packages do) and is unpacked with `dpkg -x` (cosign is one static Go binary that needs
# only libc6 >= 2.34, which bookworm has). Needs no root. Idempotent; a lock keeps parallel callers apart.
set -euo pipefail

DEST=${1:?usage: cosign.sh DEST_DIR}
say() { printf 'cosign: %s\n' "$*" >&2; }
die() { printf 'cosign: error: %s\n' "$*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install cosign >= 2 yourself (https://docs.sigstore.dev/cosign/system_config/installation/) and put it on PATH"
command -v dpkg >/dev/null 2>&1 || die "no dpkg here: install cosign >= 2 yourself and put it on PATH"
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9

binary="$DEST/root/usr/bin/cosign"
if [ -x "$binary" ] && "$binary" version >/dev/null 2>&1; then
  echo "$binary"
  exit 0
fi

apt_dir="$DEST/trixie-apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
echo 'deb http://deb.debian.org/debian trixie main' >"$apt_dir/sources.list"
apt_trixie=(-oDir::Etc::SourceList="$apt_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
  -oDir::State::Lists="$apt_dir/lists" -oDir::Cache="$apt_dir/cache" -oAPT::Get::List-Cleanup=0
  -oDebug::NoLocking=1)
say "downloading cosign from Debian trixie into $DEST"
apt-get "${apt_trixie[@]}" update -qq >"$DEST/apt.log" 2>&1 || die "apt-get update of trixie failed, see $DEST/apt.log"
(cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${apt_trixie[@]}" download cosign >>"$DEST/apt.log" 2>&1) \
  || die "downloading cosign failed, see $DEST/apt.log"
rm -rf "$DEST/root.new"
dpkg -x "$apt_dir"/debs/cosign_*.deb "$DEST/root.new" || die "unpacking $(echo "$apt_dir"/debs/cosign_*.deb) failed"
"$DEST/root.new/usr/bin/cosign" version >/dev/null 2>&1 || die "the unpacked cosign does not run (libc too old?)"
rm -rf "$DEST/root"
mv "$DEST/root.new" "$DEST/root"
say "ready: $("$binary" version 2>/dev/null | sed -n 's/^GitVersion: *//p')"
echo "$binary"
