#!/usr/bin/env bash
# Builds the real control plane the operator tests run against: kube-apiserver, kubectl and etcd
# from their Go modules (through the Go module proxy), and helm; and the node the cluster test
# (tests/cluster/) runs pods on: kubelet, kube-proxy, kube-scheduler, kube-controller-manager and
# a static pause program for the pod sandboxes. Binaries are cached outside the clone and rebuilt
# only when missing; prints the directory that holds them.
#
# Why a module of our own: k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
# them with ./staging/..., so a dependent module must map each to its published tag. The list is
# read from the exact upstream go.mod, never hard-coded. etcd's server module has replace
# directives too, so it is built from a module of our own as well; helm installs directly.
set -euo pipefail

K8S=${MODELGATE_K8S_VERSION:-1.36.3}
ETCD=${MODELGATE_ETCD_VERSION:-3.6.16}
HELM=${MODELGATE_HELM_VERSION:-4.3.1}
BIN=${MODELGATE_TESTBIN:-$HOME/.cache/modelgate/k8s-bin/k8s-$K8S-etcd-$ETCD-helm-$HELM}

PAUSE_SOURCE=$(cd "$(dirname "$0")/../cluster/pause" && pwd)

log() { printf '[testbin] %s\n' "$*" >&2; }

KUBERNETES_COMMANDS=(kube-apiserver kubectl kubelet kube-proxy kube-scheduler kube-controller-manager)
missing=()
for command in "${KUBERNETES_COMMANDS[@]}"; do
	[[ -x "$BIN/$command" ]] || missing+=("k8s.io/kubernetes/cmd/$command")
done
if [[ ${#missing[@]} -eq 0 && -x "$BIN/etcd" && -x "$BIN/helm" && -x "$BIN/pause" ]]; then
	echo "$BIN"
	exit 0
fi
command -v go >/dev/null || { log "go is required to build the test control plane"; exit 1; }
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ${#missing[@]} -gt 0 ]]; then
	log "building ${missing[*]##*/} v$K8S (several minutes on 2 cores)"
	mkdir -p "$work/apiserver" && cd "$work/apiserver"
	go mod init local.invalid/testbin-apiserver >/dev/null 2>&1
	kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/src/.*#\1#p' "$kmod"); do
		go mod edit -replace="$m=$m@v0.${K8S#1.}"
	done
	go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S" >/dev/null 2>&1 || go mod download all
	minor=$(echo "$K8S" | cut -d. -f2)
	ldflags="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags="$ldflags -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	# One `go build` for every command of the module: shared packages compile once.
	out="$work/out"
	mkdir -p "$out"
	go build -trimpath -ldflags "$ldflags" -o "$out/" "${missing[@]}"
	mv "$out"/* "$BIN/"
fi

if [[ ! -x "$BIN/etcd" ]]; then
	log "building etcd v$ETCD"
	mkdir -p "$work/etcd" && cd "$work/etcd"
	go mod init local.invalid/testbin-etcd >/dev/null 2>&1
	go get "go.etcd.io/etcd/server/v3@v$ETCD" >/dev/null 2>&1 || go mod download all
	go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

if [[ ! -x "$BIN/helm" ]]; then
	log "installing helm v$HELM"
	GOBIN="$work/gobin" go install "helm.sh/helm/v4/cmd/helm@v$HELM"
	mv "$work/gobin/helm" "$BIN/helm"
fi

if [[ ! -x "$BIN/pause" ]]; then
	log "building pause"
	(cd "$PAUSE_SOURCE" && go build -trimpath -ldflags "-s -w" -o "$BIN/pause.tmp" .)
	mv "$BIN/pause.tmp" "$BIN/pause"
fi

echo "$BIN"
