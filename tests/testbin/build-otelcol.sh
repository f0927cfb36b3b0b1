#!/usr/bin/env bash
# Builds the tests' OpenTelemetry Collector (tests/otelcol: the OTLP receiver and the file
# exporter, collector release v0.161.0) from its Go modules through the Go module proxy. Cached
# outside the clone under a name derived from its go.sum, rebuilt only when missing; prints its
# path.
set -euo pipefail

src="$(cd "$(dirname "$0")/../otelcol" && pwd)"
sum=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
BIN=${MODELGATE_OTELCOL:-$HOME/.cache/modelgate/tools/otelcol-$sum/otelcol}

if [[ -x "$BIN" ]]; then
	echo "$BIN"
	exit 0
fi
command -v go >/dev/null || { printf '[otelcol] go is required\n' >&2; exit 1; }
printf '[otelcol] building the OpenTelemetry Collector (a few minutes on 2 cores)\n' >&2
mkdir -p "$(dirname "$BIN")"
cd "$src"
CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$BIN.tmp" .
mv "$BIN.tmp" "$BIN"
echo "$BIN"
