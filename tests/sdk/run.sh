#!/usr/bin/env bash
# Runs the OpenAI Python SDK conformance suite against the built binaries
# (target/debug by default; override with MODELGATE_BIN and FAKE_PROVIDER_BIN).
# Extra arguments go to pytest, e.g. tests/sdk/run.sh -k stream -x
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$("$repo/tests/sdk/venv.sh")"
cd "$repo"
export PYTHONDONTWRITEBYTECODE=1
exec "$python" -m pytest -q -p no:cacheprovider tests/sdk "$@"
