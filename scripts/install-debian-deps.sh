#!/usr/bin/env bash
# Debian packages hubfleet uses beyond Python, installed only when missing:
#   restic     -> backups of hubs (the demo fleet backs up on a schedule; `make demo` and `make test`);
#   prometheus -> promtool checks the exported Prometheus config and alert rules (tests only);
#   chromium   -> the console's browser tests (Playwright drives /usr/bin/chromium; it downloads no browser);
#   btrfs-progs -> home_quota enforced by btrfs qgroups on a loop-mounted image (tests only);
#   postgresql-15 -> each user's own database server on hubs with `user_database` (demo and tests): only the
#                 binaries in /usr/lib/postgresql/15/bin; no default cluster is made and no service started.
#   r-base-core, r-cran-irkernel -> the R environment of local hubs (its IR kernel in
#                 /usr/share/jupyter/kernels/ir; demo and tests).
# `install-debian-deps.sh demo` installs only what the demo fleet needs.
# A machine without apt or network still runs the suite; the tests that need these say they were skipped.
set -u
missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
command -v R >/dev/null 2>&1 || missing+=(r-base-core)
[ -f /usr/share/jupyter/kernels/ir/kernel.json ] || missing+=(r-cran-irkernel)
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
apt_install() {
  $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1
         $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; }
}
case " ${missing[*]} " in *" postgresql-15 "*)
  # postgresql-common first, told to make no "main" cluster: postgresql-15's own install would otherwise
  # create one and start a server on port 5432 that nothing here uses.
  apt_install postgresql-common || true
  conf=/etc/postgresql-common/createcluster.conf
  if [ -f "$conf" ] && ! grep -q '^create_main_cluster *= *false' "$conf"; then
    echo 'create_main_cluster = false' | $sudo tee -a "$conf" >/dev/null
  fi
esac
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update -q >/dev/null 2>&1
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || echo "could not install ${missing[*]}; the tests that need them will be skipped" >&2
fi
# The prometheus package may start a server where an init system runs; the tests need only promtool.
exit 0
