#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite as the calling user.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${ISOBOX_VENV:-/opt/isobox-venv}
"$here/scripts/setup.sh"
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
