#!/usr/bin/env bash
# The cluster test: a single-node Kubernetes cluster of real parts (tests/cluster/node.py), the
# charts installed into it, pods running the images made from the release binaries, and the
# scenarios of tests/cluster/e2e.py. Everything runs in private network, mount and PID
# namespaces: when the test ends, however it ends, its processes die with the PID namespace,
# its mounts and iptables rules with theirs, and this script removes the scratch directory and
# the cgroups the kubelet made.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

tests/cluster/install-node-packages.sh
bin="$(tests/testbin/build-testbin.sh)"
python="$(tests/sdk/venv.sh)"
cargo build --locked --release -p modelgate-dataplane -p modelgate-operator -p fake-provider

work="$(mktemp -d /tmp/modelgate-cluster-XXXXXX)"
cleanup() {
	find /sys/fs/cgroup/*/"$(basename "$work")" -depth -type d -exec rmdir {} + 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
# bash is the namespace's init: it reaps orphaned processes (containerd's shims), and when it
# exits (the test ended, or a signal asked it to) the kernel kills everything left in the
# namespace. unshare itself ignores TERM and INT, so a signal to this script is passed to the
# init; --kill-child covers this script being killed outright.
unshare --pid --fork --kill-child --mount-proc --net --mount \
	bash -c 'trap "exit 143" TERM INT; "$@" & wait $!' cluster python3 tests/cluster/e2e.py \
	--bin "$bin" --work "$work" --release target/release --sdk-python "$python" "$@" &
namespaces=$!
trap 'pkill -TERM -P "$namespaces"; wait "$namespaces"; exit 143' TERM INT
wait "$namespaces"
