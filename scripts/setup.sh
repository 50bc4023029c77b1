#!/usr/bin/env bash
# One-time set-up of a fresh Debian/Ubuntu machine for isobox: system packages (the
# compiler for the native core, and the real parts the tests and benchmarks use), then a
# virtualenv every user can read at $ISOBOX_VENV with isobox installed in it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${ISOBOX_VENV:-/opt/isobox-venv}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

packages=(
  python3 python3-venv python3-dev gcc libc6-dev       # build the CFFI core
  uidmap                                               # newuidmap/newgidmap for rootless
  busybox-static docker-registry skopeo umoci          # real images and a real registry
  apache2-utils openssl                                # registry auth fixtures
  crun runc bubblewrap podman hyperfine                # peers for benchmarks and checks
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  $sudo /usr/bin/python3 -m venv "$venv"
  $sudo chmod -R a+rX "$venv"
fi
$sudo "$venv/bin/pip" install -q --upgrade pip setuptools wheel cffi
$sudo "$venv/bin/pip" install -q --no-build-isolation --config-settings editable_mode=compat -e "$here[test]"
$sudo chmod -R a+rX "$venv"
echo "isobox is installed in $venv"
