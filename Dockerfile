# syntax=docker/dockerfile:1
#
# The modelgate image: ONE image that holds both binaries,
#   /usr/local/bin/modelgate-dataplane   the gateway (the default entrypoint)
#   /usr/local/bin/modelgate-operator    the operator
# One image means one build, one scan and one tag to promote for the whole release; the Helm chart
# picks the binary per Deployment with `command` and sets every flag with `args`.
#
#   docker build -t ghcr.io/modelgate/modelgate:0.1.0 .
#
# Running the gateway outside Kubernetes (its listeners default to loopback, so name them):
#   docker run --rm -p 4000:4000 -v "$PWD/examples:/examples:ro" ghcr.io/modelgate/modelgate:0.1.0 \
#     --config /examples/quickstart.yaml --listen 0.0.0.0:4000

# ---------------------------------------------------------------------------------------------
# Build stage: the official Rust image on Debian 12 (bookworm), the same Debian release as the
# runtime image below, so the binaries link against the glibc they will run with. `rust:1` tracks
# the latest stable 1.x, which satisfies the workspace's rust-version; pin a digest
# (--build-arg RUST_IMAGE=rust:1-bookworm@sha256:...) for bit-for-bit reproducible releases.
ARG RUST_IMAGE=rust:1-bookworm
# Runtime: distroless "cc" = glibc + libgcc_s (Rust's std needs both) + CA certificates and
# tzdata, and nothing else: no shell, no package manager, so nothing to exec into or exploit.
# The `nonroot` variant runs as uid/gid 65532, the user the Helm chart's securityContext expects.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole workspace: `cargo build -p` still reads every member's manifest (tests/fake-provider
# and tests/testbin included). .dockerignore keeps target/, .git/ and Python venvs out.
COPY . .
# --locked: build exactly the dependency versions in Cargo.lock, or fail; never re-resolve.
# Cache mounts keep the crates.io index, downloaded crates and compiled dependencies between
# builds (they are not part of any layer), so a source change recompiles only our crates. The
# target dir is a cache mount too, hence the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p modelgate-dataplane -p modelgate-operator \
 && mkdir -p /out \
 && cp target/release/modelgate-dataplane target/release/modelgate-operator /out/
# The release profile keeps line tables (Cargo.toml: debug = "line-tables-only"), so a panic's
# backtrace names files and lines; they are not stripped here on purpose.

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="modelgate" \
      org.opencontainers.image.description="Kubernetes-native LLM gateway: modelgate-dataplane and modelgate-operator" \
      org.opencontainers.image.source="https://github.com/modelgate/modelgate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# Root-owned and not writable by the runtime user: the binaries cannot be replaced at run time
# (the chart also mounts the root filesystem read-only).
COPY --from=builder --chown=0:0 --chmod=0755 /out/modelgate-dataplane /out/modelgate-operator /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup.
USER 65532:65532
# 4000: the gateway's OpenAI-compatible API; 9464: the gateway's admin listener (/healthz,
# /readyz, /metrics); 8080: the operator's admin listener. Documentation only: EXPOSE opens
# nothing.
EXPOSE 4000 9464 8080
# The gateway by default, with no baked-in arguments: the chart (and `docker run`) pass them, and
# the chart runs the operator with `command: [/usr/local/bin/modelgate-operator]`.
ENTRYPOINT ["/usr/local/bin/modelgate-dataplane"]
