#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 10: the smoke CI runs; `make fuzz`
# passes more), starting from the committed seed corpus (fuzz/corpus/<target>, never written:
# new inputs go to a scratch corpus) and prints each target's execs and corpus size. A crash
# fails the run and leaves its input in fuzz/artifacts/<target>/.
#
# cargo-fuzz is built once from the registry into ~/.cache/modelgate/tools. It runs on the stable
# toolchain with `--sanitizer none`: libFuzzer's coverage instrumentation needs only stable codegen
# flags, and AddressSanitizer (the only -Z flag cargo fuzz would pass) adds little to crates with
# no `unsafe` code of their own.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-${SECONDS_PER_TARGET:-10}}"
version=0.13.2
root="${MODELGATE_CACHE:-$HOME/.cache/modelgate}/tools/cargo-fuzz-$version"
if [[ ! -x "$root/bin/cargo-fuzz" ]]; then
    echo "fuzz.sh: building cargo-fuzz $version into $root (once)" >&2
    cargo install --quiet --locked --version "$version" --root "$root" cargo-fuzz
fi
fuzz=("$root/bin/cargo-fuzz")
"${fuzz[@]}" build --sanitizer none >&2
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $("${fuzz[@]}" list); do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! "${fuzz[@]}" run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz.sh: $target failed" >&2
        exit 1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    printf '%-18s %4ss  %12s execs  corpus %5s inputs (%s seeds)\n' "$target" "$seconds" "$execs" \
        "$(ls "$scratch/$target" | wc -l)" "$(ls "corpus/$target" | wc -l)"
done
