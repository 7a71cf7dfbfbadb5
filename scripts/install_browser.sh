#!/usr/bin/env bash
# Installs the headless browser the dashboard's browser tests drive: Debian's `chromium`
# (from the distribution's own packages, never a downloaded browser build) and, with
# --driver, `chromium-driver` for Selenium. Idempotent: a second run checks and returns at once.
#
#   scripts/install_browser.sh            chromium
#   scripts/install_browser.sh --driver   chromium and chromium-driver
#
# Needs root (or sudo) and apt. Environment: APT_GET (default apt-get).
set -euo pipefail

packages=(chromium)
[[ "${1:-}" == "--driver" ]] && packages+=(chromium-driver)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} == 0 )) && [[ -x /usr/bin/chromium ]]; then
  echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi

command -v apt-get >/dev/null || { echo "install_browser: apt-get not found (not Debian/Ubuntu?); install chromium yourself" >&2; exit 1; }
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install_browser: needs root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
APT_GET="${APT_GET:-apt-get}"
export DEBIAN_FRONTEND=noninteractive
echo "install_browser: installing ${missing[*]}"
"${SUDO[@]}" "$APT_GET" update -qq
"${SUDO[@]}" "$APT_GET" install -y -qq --no-install-recommends "${missing[@]}" fonts-liberation >/dev/null
echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null) installed"
