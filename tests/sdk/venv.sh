#!/usr/bin/env bash
# Makes sure the SDK virtualenv (the pinned official SDKs of requirements.txt) exists and is
# current, and prints its python. MODELGATE_VENV overrides where it lives.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
requirements="$repo/tests/sdk/requirements.txt"
venv="${MODELGATE_VENV:-$HOME/.cache/modelgate/sdk-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    # Debian splits venv/ensurepip out of python3 into the python3-venv package.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        sudo=""
        [[ $(id -u) -eq 0 ]] || sudo=sudo
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq python3-venv >/dev/null
    fi
    if [[ -d "$venv" && ! -f "$venv/pyvenv.cfg" && -n "$(ls -A "$venv")" ]]; then
        echo "venv.sh: $venv is a non-empty directory but not a venv; refusing to clear it" >&2
        exit 1
    fi
    echo "venv.sh: creating SDK venv at $venv" >&2
    # --clear so a changed requirements.txt never leaves stale packages behind.
    python3 -m venv --clear "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$requirements" >&2
    echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
