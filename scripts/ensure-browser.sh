#!/usr/bin/env bash
# Make sure the real browser the console's tests drive is installed: Debian's chromium and its chromedriver
# (tests/e2e/browser.py uses exactly /usr/bin/chromium and /usr/bin/chromedriver, never a downloaded one).
# Install them if not, fail loudly if that fails. The browser tests never skip for a missing browser.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
PACKAGES=(chromium chromium-driver)

have_browser() { [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "ensure-browser: not root and no sudo, cannot run: $*" >&2
    return 1
  fi
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}"
}

if ! have_browser; then
  echo "ensure-browser: $CHROMIUM or $CHROMEDRIVER missing, installing ${PACKAGES[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: FAILED: no apt-get here; install ${PACKAGES[*]} (Debian) by hand" >&2
    exit 1
  fi
  # The package lists may be missing or stale on a fresh machine: refresh them only when the install fails.
  if ! apt_install; then
    echo "ensure-browser: install failed, running apt-get update and trying again" >&2
    as_root apt-get update -q || true
    apt_install || true
  fi
  have_browser || {
    echo "ensure-browser: FAILED to install ${PACKAGES[*]}: $CHROMIUM or $CHROMEDRIVER still missing" >&2
    exit 1
  }
fi

# Debian's chromium launcher is a shell script that prints noise on stderr; keep only the version line.
chromium_version=$("$CHROMIUM" --version 2>/dev/null) || {
  echo "ensure-browser: FAILED: $CHROMIUM --version does not run" >&2
  exit 1
}
driver_version=$("$CHROMEDRIVER" --version 2>/dev/null) || {
  echo "ensure-browser: FAILED: $CHROMEDRIVER --version does not run" >&2
  exit 1
}
echo "ensure-browser: $chromium_version ($CHROMIUM); $driver_version ($CHROMEDRIVER)"
