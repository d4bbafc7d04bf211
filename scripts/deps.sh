#!/bin/sh
# deps.sh - installs the Debian packages gpuq needs, and nothing when all
# are present.  Uses sudo when not root.
# Usage: scripts/deps.sh [build|test|bench|fuzz|valgrind]
set -e
pkgs="build-essential pkg-config libevent-dev libcurl4-openssl-dev
libjansson-dev libsqlite3-dev libinih-dev libsystemd-dev libsndfile1-dev
libsamplerate0-dev libssl-dev"
case "${1:-build}" in
test) pkgs="$pkgs libcmocka-dev python3 curl prometheus" ;;
# make valgrind: the integration tests under valgrind memcheck.
valgrind) pkgs="$pkgs python3 curl prometheus valgrind" ;;
bench) pkgs="$pkgs python3 beanstalkd" ;;
fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;; # libFuzzer (tests/fuzz)
esac
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
