#!/usr/bin/env bash
# Debian packages hubfleet uses beyond Python, installed only when missing:
#   restic     -> backups of hubs (the demo fleet backs up on a schedule; `make demo` and `make test`);
#   prometheus -> promtool checks the exported Prometheus config and alert rules (tests only);
#   chromium   -> the console's browser tests (Playwright drives /usr/bin/chromium; it downloads no browser);
#   btrfs-progs -> home_quota enforced by btrfs qgroups on a loop-mounted image (tests only).
# `install-debian-deps.sh demo` installs only what the demo fleet needs.
# A machine without apt or network still runs the suite; the tests that need these say they were skipped.
set -u
missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
if [ "${1:-test}" != demo ]; then
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v mkfs.btrfs >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.btrfs ] || missing+=(btrfs-progs)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: ${missing[*]} not installed; the tests that need them will be skipped" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "not root and no sudo: ${missing[*]} not installed; the tests that need them will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -q >/dev/null 2>&1
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || echo "could not install ${missing[*]}; the tests that need them will be skipped" >&2
fi
# The prometheus package may start a server where an init system runs; the tests need only promtool.
exit 0
