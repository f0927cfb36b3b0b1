# modelgate: `make help` lists every target.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
LISTEN ?= 127.0.0.1:4000
ADMIN_LISTEN ?= 127.0.0.1:9464
CONFIG ?= examples/quickstart.yaml
IMAGE ?= ghcr.io/modelgate/modelgate:0.1.0
CONTAINER_ENGINE ?= docker
# The chart's Grafana dashboard and alert rules, copied to docs/ for users without the chart.
MONITORING_DOCS := grafana/modelgate.json prometheus/alerts.yaml

.PHONY: help run build test test-fast test-rust test-sdk check fmt lint generate golden image bench fuzz soak

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

run: ## Build and run the gateway on the quickstart config (mock provider, demo key)
	$(CARGO) build --release -p modelgate-dataplane
	@echo
	@echo "modelgate is starting on http://$(LISTEN) (admin on http://$(ADMIN_LISTEN)). Try:"
	@echo
	@echo "  curl -s http://$(LISTEN)/v1/chat/completions -H 'Authorization: Bearer sk-mg-quickstart' -H 'Content-Type: application/json' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}' -D -"
	@echo
	exec ./target/release/modelgate-dataplane --config $(CONFIG) --listen $(LISTEN) --admin-listen $(ADMIN_LISTEN) --decision-log -

build: ## Build every crate (debug)
	$(CARGO) build --workspace --all-targets

test: ## Run every test (what CI runs), printing each stage's time at the end
	tests/run-all.sh

test-fast: ## Rust tests without the control plane (no Go builds), for quick iteration
	tests/testbin/install-redis.sh
	$(CARGO) test --workspace --exclude modelgate-operator
	$(CARGO) test -p modelgate-operator --lib

test-rust: ## Every Rust test: the operator against a real kube-apiserver + etcd, limits on a real Redis
	tests/testbin/build-testbin.sh >/dev/null
	tests/testbin/install-redis.sh
	$(CARGO) test --workspace

test-sdk: ## The OpenAI Python SDK conformance suite against the built binaries
	$(CARGO) build -p modelgate-dataplane -p fake-provider
	tests/sdk/run.sh

check: ## Generated files fresh, formatting, clippy -D warnings, dependency policy (cargo deny)
	$(CARGO) run --locked -q -p modelgate-crds --bin crdgen -- --check charts/modelgate-crds/templates
	$(foreach f,$(MONITORING_DOCS),cmp charts/modelgate/files/$(f) docs/$(f) || { echo "docs/$(f) is stale: run make generate"; exit 1; };)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	tests/deny.sh

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## clippy with warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

generate: ## Regenerate the CRD templates of the modelgate-crds chart, and docs/' copies of the chart's dashboard and alerts
	$(CARGO) run -q -p modelgate-crds --bin crdgen -- charts/modelgate-crds/templates
	$(foreach f,$(MONITORING_DOCS),mkdir -p $(dir docs/$(f)) && cp charts/modelgate/files/$(f) docs/$(f);)

golden: ## Rewrite the golden files (provider and inbound translations, the chart's default render, the RBAC can-i lists) from what the code produces now
	UPDATE_GOLDEN=1 $(CARGO) test -p modelgate-dataplane --lib -- goldens conformance
	tests/testbin/build-testbin.sh >/dev/null
	UPDATE_GOLDEN=1 $(CARGO) test -p modelgate-operator --test k8s -- golden permissions

image: ## Build the one image holding both binaries (IMAGE=..., CONTAINER_ENGINE=docker|podman)
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

fuzz: ## Every fuzz target for FUZZ_SECONDS each (default 300) from the committed seed corpus
	tests/fuzz.sh $${FUZZ_SECONDS:-300}

soak: ## Mixed load on the real gateway for SOAK_SECONDS (default 600): config swaps, a Redis restart, RSS/fd/task series and plot in target/soak
	$(CARGO) build --locked -p modelgate-dataplane -p fake-provider
	tests/testbin/install-redis.sh
	python3 tests/soak/soak.py --seconds $${SOAK_SECONDS:-600}

bench: ## Load benchmark: the gateway against nginx proxy_pass over a fast upstream, ratios; allocations per request (not a test)
	$(CARGO) build --release -p modelgate-dataplane
	python3 bench/bench.py
	$(CARGO) bench -p modelgate-dataplane --bench request
