#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is missing.
# Playwright never downloads a browser here (the network reaches only the
# package registries), so the tests drive /usr/bin/chromium.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
source "$(dirname "$0")/root.sh"
need_root "Chromium is" chromium
echo "Installing Chromium from Debian (once per machine)..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
