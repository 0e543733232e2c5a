#!/usr/bin/env bash
# Debian packages the test suite uses beyond Python: promtool (package prometheus) checks the exported
# Prometheus config and alert rules. Installed only when missing; a machine without apt or network
# still runs the suite, and the promtool test says it was skipped.
set -u
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: promtool not installed; its test will be skipped" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "not root and no sudo: promtool not installed; its test will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; then
  $sudo apt-get update -q >/dev/null 2>&1
  $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || echo "could not install prometheus (promtool); its test will be skipped" >&2
fi
# The package may start a Prometheus server where an init system runs; the tests need only promtool.
exit 0
