#!/usr/bin/env bash
# Installs Debian's ejabberd and its PostgreSQL driver for the XMPP benchmark
# target. The bench runs its own private ejabberd node, so the package's
# system service must never start: a temporary policy-rc.d vetoes it.
set -euo pipefail
if [ -x /usr/sbin/ejabberdctl ]; then
  exit 0
fi
source "$(dirname "$0")/root.sh"
need_root "ejabberd is" ejabberd erlang-p1-pgsql
policy=/usr/sbin/policy-rc.d
backup=""
if [ -e "$policy" ]; then
  backup="$(mktemp)"
  $sudo cp -p "$policy" "$backup"
fi
restore_policy() {
  if [ -n "$backup" ]; then
    $sudo cp -p "$backup" "$policy"
    rm -f "$backup"
  else
    $sudo rm -f "$policy"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
$sudo chmod 755 "$policy"
echo "Installing ejabberd from Debian (once per machine)..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  ejabberd erlang-p1-pgsql >/dev/null
# Should a system ejabberd have started anyway, stop it (only the package's own node).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ejabberd 2>/dev/null; then
  $sudo systemctl stop ejabberd || true
fi
# Probe by process, not 'ejabberdctl status', which would leave an epmd behind.
if pgrep -u ejabberd -x beam.smp >/dev/null 2>&1; then
  $sudo /usr/sbin/ejabberdctl stop >/dev/null 2>&1 || true
  $sudo /usr/sbin/ejabberdctl stopped >/dev/null 2>&1 || true
fi
