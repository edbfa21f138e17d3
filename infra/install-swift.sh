#!/usr/bin/env bash
# Install OpenStack Swift (the local S3-compatible object store) into its own virtual environment.
#
# Idempotent: does nothing when the venv already holds the pinned versions (stamp file).
#   infra/install-swift.sh            # -> .infra/venv-swift  (or $SIDN_SWIFT_VENV)
# Needs: python3 (3.10+) with venv, and PyPI (or a mirror set in pip.conf). No apt packages.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
state="${SIDN_INFRA_DIR:-$repo/.infra}"
venv="${SIDN_SWIFT_VENV:-$state/venv-swift}"
reqs="$here/swift-requirements.txt"
python="${PYTHON:-python3}"
stamp="$venv/.sidn-installed"

want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [[ -x "$venv/bin/swift-proxy-server" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "install-swift: $venv is up to date"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
start=$(date +%s)
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
# --no-deps with a full pin list: the same versions on every machine, no resolver surprises.
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --no-deps -r "$reqs" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
"$venv/bin/python" - <<'PY'
import swift, eventlet, paste.deploy, xattr, pyeclib  # noqa: F401  (fail loudly if anything is missing)
from importlib.metadata import version
print("install-swift: swift", version("swift"), "ready")
PY
"$venv/bin/pip" check >/dev/null || { echo "install-swift: pip check failed in $venv" >&2; "$venv/bin/pip" check >&2; exit 1; }
echo "$want" > "$stamp"
echo "install-swift: installed into $venv in $(( $(date +%s) - start ))s"
