#!/usr/bin/env bash
# Installs and starts a Docker 26 engine with the containerd image store, buildx and QEMU for arm64 on a
# Debian 12 host that has none. Idempotent: every step checks before it acts, so a second run only
# (re)starts what is not running. Called by pipeline/engine.py only where no engine is installed, or for
# the engine this script installed itself (recorded in $STATE_DIR/installed.json). An engine installed by
# anyone else is never stopped, restarted or reconfigured: this script refuses to touch it.
set -euo pipefail

STATE_DIR=${PIPELINE_ENGINE_STATE:-/var/lib/pipeline-engine}
LOG_DIR=${PIPELINE_ENGINE_LOGS:-/var/log/pipeline-engine}
DEBIAN_BASE_PACKAGES=(containerd runc tini iptables qemu-user-static binfmt-support docker-registry busybox-static)
# bookworm's docker.io is 20.10, whose BuildKit cannot build several platforms at once; trixie's is 26.
TRIXIE_PACKAGES=(docker.io docker-cli docker-buildx)
MIN_DOCKERD_MAJOR=26
MARKER="$STATE_DIR/installed.json"
DEFAULT_DOCKER_HOST=unix:///var/run/docker.sock

say() { printf 'engine: %s\n' "$*" >&2; }
die() { printf 'engine: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "installing the engine needs root; run as root or install Docker >= ${MIN_DOCKERD_MAJOR} with buildx and QEMU binfmt yourself"
grep -qx 'ID=debian' /etc/os-release 2>/dev/null || die "the automatic install supports Debian only; install Docker >= ${MIN_DOCKERD_MAJOR} with buildx and QEMU binfmt (docker/setup-qemu-action or tonistiigi/binfmt) yourself"
mkdir -p "$STATE_DIR" "$LOG_DIR"
export DEBIAN_FRONTEND=noninteractive
[ "${PIPELINE_DOCKER_HOST:-$DEFAULT_DOCKER_HOST}" = "$DEFAULT_DOCKER_HOST" ] \
  || die "the docker CLI points at ${PIPELINE_DOCKER_HOST}: this script only manages the engine it installs on $DEFAULT_DOCKER_HOST"
# Every docker command below talks to that engine, whatever context the caller had.
export DOCKER_HOST="$DEFAULT_DOCKER_HOST"
unset DOCKER_CONTEXT

# Ours: recorded by an earlier run, or installed before the record existed (our private trixie downloads).
if [ ! -e "$MARKER" ] && compgen -G "$STATE_DIR/trixie-apt/debs/*.deb" >/dev/null; then
  printf '{"docker_host": "%s", "adopted": true}\n' "$DEFAULT_DOCKER_HOST" >"$MARKER"
fi
if [ ! -e "$MARKER" ] && { command -v dockerd >/dev/null 2>&1 || [ -S /var/run/docker.sock ]; }; then
  die "a Docker engine is installed here, but not by the pipeline: nothing was changed. Give it buildx, the containerd image store and QEMU binfmt yourself (see README, 'Host changes')"
fi

apt_updated=""
apt_update_once() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >"$LOG_DIR/apt-update.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt-update.log"
    apt_updated=1
  fi
}

missing=()
for package in "${DEBIAN_BASE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update_once
  say "installing from Debian: ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt-install.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed, see $LOG_DIR/apt-install.log"
fi

dockerd_major() {
  command -v dockerd >/dev/null 2>&1 || { echo 0; return; }
  dockerd --version | sed -E 's/^Docker version ([0-9]+)\..*/\1/'
}

if [ "$(dockerd_major)" -lt "$MIN_DOCKERD_MAJOR" ]; then
  # A private apt configuration so that trixie never enters the machine's own sources (it would offer a
  # libc upgrade); its docker packages only need bookworm's containerd, runc, tini and iptables.
  trixie_dir="$STATE_DIR/trixie-apt"
  mkdir -p "$trixie_dir/lists/partial" "$trixie_dir/debs"
  echo 'deb http://deb.debian.org/debian trixie main' >"$trixie_dir/sources.list"
  apt_trixie=(-oDir::Etc::SourceList="$trixie_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
    -oDir::State::Lists="$trixie_dir/lists" -oAPT::Get::List-Cleanup=0)
  say "downloading ${TRIXIE_PACKAGES[*]} from Debian trixie (bookworm's engine is too old for multi-platform builds)"
  apt-get "${apt_trixie[@]}" update -qq >"$LOG_DIR/apt-trixie.log" 2>&1 || die "apt-get update of trixie failed, see $LOG_DIR/apt-trixie.log"
  (cd "$trixie_dir/debs" && rm -f ./*.deb && apt-get "${apt_trixie[@]}" download "${TRIXIE_PACKAGES[@]}" >>"$LOG_DIR/apt-trixie.log" 2>&1) \
    || die "downloading ${TRIXIE_PACKAGES[*]} failed, see $LOG_DIR/apt-trixie.log"
  say "installing $(cd "$trixie_dir/debs" && echo ./*.deb)"
  # dpkg prints that it may not start the service (no init system here): not an error, we start dockerd
  # ourselves below. A failing dpkg (broken dependencies) is.
  dpkg -i --force-confold "$trixie_dir"/debs/*.deb >"$LOG_DIR/dpkg.log" 2>&1 \
    || die "dpkg -i --force-confold $trixie_dir/debs/*.deb failed (exit $?), see $LOG_DIR/dpkg.log"
  [ "$(dockerd_major)" -ge "$MIN_DOCKERD_MAJOR" ] || die "dockerd >= ${MIN_DOCKERD_MAJOR} did not install, see $LOG_DIR/dpkg.log"
  printf '{"docker_host": "%s", "packages": "%s"}\n' "$DEFAULT_DOCKER_HOST" "${TRIXIE_PACKAGES[*]}" >"$MARKER"
fi
[ -e "$MARKER" ] || die "dockerd >= ${MIN_DOCKERD_MAJOR} is present but was not installed by the pipeline: nothing was changed"

# The containerd image store lets the default `docker` builder build, load and cache several platforms.
# Extra daemon settings (registry mirrors for the offline base) come as JSON in PIPELINE_DAEMON_EXTRA.
mkdir -p /etc/docker
python3 - "${PIPELINE_DAEMON_EXTRA:-{\}}" <<'PY'
import json, pathlib, sys
path = pathlib.Path("/etc/docker/daemon.json")
current = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
wanted = dict(current)
wanted.setdefault("features", {})["containerd-snapshotter"] = True
for key, value in json.loads(sys.argv[1]).items():
    if isinstance(value, list):
        wanted[key] = sorted(set(wanted.get(key, [])) | set(value))
    else:
        wanted[key] = value
if wanted != current:
    path.write_text(json.dumps(wanted, indent=2) + "\n")
    pathlib.Path("/run/pipeline-daemon-json-changed").touch()
PY

# QEMU for arm64: binfmt_misc must be mounted and the handler enabled after every machine start; the F
# flag (fix binary) is what lets the interpreter work inside containers.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc (is this a container without privileges?)"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || die "update-binfmts --enable qemu-aarch64 failed"
fi
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt handler lacks the F flag; reinstall qemu-user-static"

engine_answers() { docker info >/dev/null 2>&1; }

stop_dockerd() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
}

if engine_answers && [ -e /run/pipeline-daemon-json-changed ]; then
  say "daemon.json changed: restarting dockerd"
  stop_dockerd
fi
rm -f /run/pipeline-daemon-json-changed

if ! engine_answers; then
  for attempt in 1 2 3; do
    say "starting dockerd (log: $LOG_DIR/dockerd.log)"
    # Its own session, so that it outlives the shell that started it and a Ctrl-C there does not reach it.
    setsid dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 150); do
      engine_answers && break 2
      kill -0 $! 2>/dev/null || break
      sleep 0.2
    done
    # Seen here: right after a kill, a new dockerd refuses the stale pid file until the old one has gone.
    say "dockerd did not answer (attempt $attempt of 3), retrying in $((attempt * 2))s"
    sleep $((attempt * 2))
  done
  engine_answers || die "dockerd did not start, see $LOG_DIR/dockerd.log"
fi

docker buildx version >/dev/null 2>&1 || die "docker buildx is missing; install docker-buildx"
docker buildx inspect --bootstrap 2>/dev/null | grep -q 'linux/arm64' || die "the builder does not list linux/arm64 after enabling QEMU"
say "ready: $(dockerd --version), $(docker buildx version | cut -d' ' -f1-2), platforms linux/amd64 linux/arm64"
