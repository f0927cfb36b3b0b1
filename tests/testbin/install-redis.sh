#!/usr/bin/env bash
# The spend-control tests run a real redis-server (started on a free port by the tests). This
# installs Debian's package when it is missing.
set -euo pipefail
if command -v redis-server >/dev/null; then
	exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
	sudo="sudo"
fi
echo "[redis] installing redis-server from the Debian packages" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
