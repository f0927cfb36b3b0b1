#!/usr/bin/env bash
# Fails in seconds, naming what is missing, instead of halfway through a long run.
set -euo pipefail
missing=()
for tool in cargo rustc go python3 git make; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
for component in rustfmt clippy; do
	cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || missing+=("rust component $component (rustup component add $component)")
done
if ((${#missing[@]})); then
	printf 'missing: %s\n' "${missing[@]}" >&2
	exit 1
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
	{ echo "python 3.10 or newer is required" >&2; exit 1; }
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[[ -n $go_minor && $go_minor -ge 26 ]] || { echo "go 1.26 or newer is required (found $(go env GOVERSION))" >&2; exit 1; }
printf 'cargo %s, go %s, python %s\n' "$(cargo --version | cut -d' ' -f2)" "$(go env GOVERSION)" "$(python3 -c 'import platform; print(platform.python_version())')"
