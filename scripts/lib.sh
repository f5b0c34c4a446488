# Shared helpers for weir's shell scripts. Source it; it defines functions and sets nothing else.
# shellcheck shell=bash

# The repository's root directory (this file is in scripts/).
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
}

# Prints a section header, so that a long CI log can be read by skimming.
section() {
  printf '\n==> %s\n' "$*"
}

# Prints a progress line to stderr (stdout stays free for output meant for other programs).
note() {
  printf '%s\n' "$*" >&2
}

# Prints an error to stderr and exits non-zero.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  local port=$1
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Whether PID is alive and its command line contains MARKER (a path only our process has), so that a
# stale pid file whose number the kernel gave to another process is never mistaken for ours.
pid_is_ours() {
  local pid=$1 marker=$2
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# Sends SIGNAL to PID, waits up to TIMEOUT seconds for it to exit, then sends SIGKILL.
stop_process() {
  local pid=$1 signal=$2 timeout=$3
  kill "-$signal" "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      note "  process $pid ignored SIG$signal for ${timeout}s: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
}

# Keeps the previous run's log beside the new one (FILE -> FILE.prev), so logs do not grow forever.
rotate_log() {
  local file=$1
  if [[ -s $file ]]; then
    mv -f -- "$file" "$file.prev"
  fi
}

# Installs Debian packages; `apt-get update` runs once per script run, before the first install.
# Debian starts a server right after installing it; policy-rc.d stops that, so that the only servers
# running are the ones scripts/services starts (and stops).
apt_install() {
  ((EUID == 0)) || die "missing packages: $*; install them (sudo apt-get install $*) or run as root"
  local added_policy=false status=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=true
  fi
  if [[ -z ${WEIR_APT_UPDATED:-} ]]; then
    apt-get update -q >&2 || status=$?
    WEIR_APT_UPDATED=1
  fi
  if ((status == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 || status=$?
  fi
  if $added_policy; then
    rm -f /usr/sbin/policy-rc.d
  fi
  ((status == 0)) || die "apt-get install $* failed (exit $status)"
}

# What building weir needs besides the Rust toolchain: librdkafka is built from source with TLS
# (rdkafka's `ssl` feature) against the system's OpenSSL, found with pkg-config.
ensure_build_packages() {
  if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
    apt_install libssl-dev pkg-config
  fi
}
