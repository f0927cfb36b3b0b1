#!/usr/bin/env bash
# Builds promtool, Prometheus' own checker of the exposition format, from its Go module (through
# the Go module proxy). Cached outside the clone and rebuilt only when missing; prints its path.
set -euo pipefail

VERSION=${MODELGATE_PROMETHEUS_MODULE_VERSION:-0.316.0}
BIN=${MODELGATE_PROMTOOL:-$HOME/.cache/modelgate/tools/promtool-v$VERSION/promtool}

if [[ -x "$BIN" ]]; then
	echo "$BIN"
	exit 0
fi
command -v go >/dev/null || { printf '[promtool] go is required\n' >&2; exit 1; }
printf '[promtool] building promtool (module github.com/prometheus/prometheus v%s)\n' "$VERSION" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$BIN")"
CGO_ENABLED=0 GOBIN="$work" go install -trimpath -ldflags "-s -w" \
	"github.com/prometheus/prometheus/cmd/promtool@v$VERSION"
mv "$work/promtool" "$BIN"
echo "$BIN"
