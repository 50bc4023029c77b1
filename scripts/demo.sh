#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the quick-start example: a container from a real image.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${ISOBOX_VENV:-/opt/isobox-venv}
"$here/scripts/setup.sh"
# --local: a local registry stands in for Docker Hub (this machine may have no internet);
# run examples/quickstart.py without it to pull from Docker Hub itself.
exec "$venv/bin/python" "$here/examples/quickstart.py" --local "$@"
