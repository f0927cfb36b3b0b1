#!/usr/bin/env bash
# The dependency policy of deny.toml (licenses, bans, sources), with cargo-deny built once from
# the registry into ~/.cache/modelgate/tools and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
root="${MODELGATE_CACHE:-$HOME/.cache/modelgate}/tools/cargo-deny-$version"
if [[ ! -x "$root/bin/cargo-deny" ]]; then
    echo "deny.sh: building cargo-deny $version into $root (once)" >&2
    cargo install --quiet --locked --version "$version" --root "$root" cargo-deny
fi
exec "$root/bin/cargo-deny" check licenses bans sources
