#!/usr/bin/env bash
# Debian packages the Python stack needs at run time; installs only what is missing (idempotent).
#   libusb-1.0-0 : `import open3d` links against libusb-1.0.so.0
#   libgomp1     : OpenMP runtime used by torch and open3d
set -euo pipefail
packages=(libusb-1.0-0 libgomp1)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sparsevision: installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}"; }
