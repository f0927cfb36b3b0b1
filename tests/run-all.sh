#!/usr/bin/env bash
# `make test`: every stage in order, each timed; the timings are printed at the end whether the
# run passed or failed, so a slow stage is seen at once.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a stages=()
started=$SECONDS
report() {
	local status=$?
	printf '\n== stage timings ==\n'
	for line in "${stages[@]}"; do printf '%s\n' "$line"; done
	printf '%-28s %5ds\n' "total" $((SECONDS - started))
	[[ $status -eq 0 ]] || printf 'FAILED (exit %d)\n' "$status"
}
trap report EXIT

stage() {
	local name=$1
	shift
	local t0=$SECONDS
	printf '\n== %s ==\n' "$name"
	if "$@"; then
		stages+=("$(printf '%-28s %5ds' "$name" $((SECONDS - t0)))")
	else
		local status=$?
		stages+=("$(printf '%-28s %5ds  failed' "$name" $((SECONDS - t0)))")
		return "$status"
	fi
}

stage "toolchain" tests/check-toolchain.sh
stage "generated, fmt, clippy" make --no-print-directory check
stage "control plane binaries" bash -c 'tests/testbin/build-testbin.sh >/dev/null'
stage "promtool" bash -c 'tests/testbin/build-promtool.sh >/dev/null'
stage "otel collector" bash -c 'tests/testbin/build-otelcol.sh >/dev/null'
stage "redis" tests/testbin/install-redis.sh
# The operator's sidecar test runs an app on the official OpenAI SDK from this venv.
stage "sdk venv" bash -c 'tests/sdk/venv.sh >/dev/null'
MODELGATE_SDK_PYTHON="$(tests/sdk/venv.sh)"
export MODELGATE_SDK_PYTHON
stage "rust tests" cargo test --locked --workspace
stage "sdk build" cargo build --locked -p modelgate-dataplane -p fake-provider
stage "sdk tests" tests/sdk/run.sh
stage "soak (60 s)" python3 tests/soak/soak.py --seconds 60
stage "fuzz smoke (10 s each)" tests/fuzz.sh 10
# Last: a real single-node cluster (kubelet, containerd) with the charts installed; it builds
# the release binaries its images are made of.
stage "cluster (real node)" tests/cluster/run.sh
