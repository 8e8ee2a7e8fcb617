#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver (packages chromium and
# chromium-driver: /usr/bin/chromium, /usr/bin/chromedriver) for the
# portal's browser test, when they are missing. Never a tool's own browser
# download.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
echo "installing Debian's chromium and chromium-driver for the portal's browser test" >&2
sudo=""
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "chromium and chromium-driver are missing and this user cannot install them: apt-get install chromium chromium-driver" >&2
    exit 1
  }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
  || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver; }
/usr/bin/chromium --version
