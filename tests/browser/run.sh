#!/bin/sh
# run.sh - the dashboard's browser test: Debian's chromium driven by
# playwright-core (pinned in package-lock.json) against the real gpuqd.
#
#   tests/browser/run.sh [BIN_DIR]      (default: the repo's bin)
#
# Installs what is missing, and nothing when it is there: chromium (apt,
# through sudo when not root), Node.js and npm (apt, only if there is no
# node at all), and playwright-core (`npm ci`, never a browser download).
# Then runs `node --test` in this directory; node's own summary ("# tests
# N", "# pass N", "# fail N", ...) ends the output.  Screenshots are
# written to build/artifacts/.  The exit status is node's: non-zero if
# anything failed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/bin}
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
apt_install() {
    echo "browser: installing $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "$@"
}
[ -x /usr/bin/chromium ] || apt_install chromium
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1
then
    apt_install nodejs npm
fi

cd "$here"
# npm ci only when node_modules is missing or older than the lock file.
if [ ! -f node_modules/playwright-core/package.json ] ||
    [ ! -f node_modules/.package-lock.json ] ||
    [ -n "$(find package-lock.json -newer node_modules/.package-lock.json)" ]
then
    echo "browser: npm ci" >&2
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund \
        --loglevel=error >&2
fi

if [ ! -x "$bin/gpuqd" ]; then
    echo "browser: no $bin/gpuqd (run make first)" >&2
    exit 2
fi
mkdir -p "$root/build/artifacts"
# The tests bound every wait; this bounds the whole run as well.
GPUQD="$bin/gpuqd" CHROMIUM=/usr/bin/chromium \
    ARTIFACTS="$root/build/artifacts" timeout 120 node --test
