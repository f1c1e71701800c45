#!/usr/bin/env bash
# Installs every Debian package mvm needs to build, test, benchmark and run the demo.
# Safe to run repeatedly; needs root (or sudo) and Debian's package mirrors.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang clang-format clang-tidy cppcheck
  libclang-rt-14-dev
  # core libraries
  libyaml-dev libinotifytools0-dev libjsoncpp-dev libcurl4-openssl-dev libspdlog-dev
  libfmt-dev libseccomp-dev libpcre2-dev
  # further libraries
  libsqlite3-dev sqlite3 libssl-dev libcli11-dev libcpp-httplib-dev libvalijson-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  # runtime and guest image
  qemu-system-x86 busybox-static e2fsprogs cpio iproute2 lz4 zstd xz-utils
  python3 file binutils gzip
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
