#!/usr/bin/env bash
# Load benchmark: fake upstream direct vs. nginx (plain reverse proxy) vs. modelgate.
#
# Invoked from the repo root by `make bench` (which builds the release binaries first).
# Everything listens on and is sent to 127.0.0.1 only; every load run is bounded in time
# (oha -z, wrapped in `timeout`), and fixed-rate runs are also bounded by rate x time.
#
# Knobs (environment):
#   BENCH_DURATION=10s          length of each measured run (Ns, Nm or plain seconds)
#   BENCH_WARMUP=2s             warm-up per target before the measured runs
#   BENCH_ROUNDS=3              rounds; each round runs direct, nginx, gateway (order rotated)
#   BENCH_CONCURRENCY=32        connections for the fixed-concurrency mode
#   BENCH_RATE=2000             requests/s for the fixed-rate mode
#   BENCH_RATE_CONCURRENCY=64   connections for the fixed-rate mode
#   BENCH_LATENCY_CORRECTION=1  pass oha --latency-correction in fixed-rate mode (coordinated omission)
#   BENCH_FAKE_LATENCY_MS=0     --latency-ms for fake-provider
#   BENCH_STARTUP_TIMEOUT=30    seconds to wait for each process to come up
#   BENCH_RESULTS_DIR=...       default bench/results/<UTC timestamp>
#   OHA=...                     oha binary (default ~/.cache/modelgate/bin/oha, installed if missing)
#   OHA_VERSION=...             pin the oha version that gets installed
#   NGINX=nginx                 nginx binary (installed from Debian via apt-get if missing)
#   MODELGATE_BIN, FAKE_PROVIDER_BIN  override the release binaries
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$PWD

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
	printf '\n[bench] ERROR: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- parameters

# Converts "10s" / "2m" / "10" to whole seconds (oha accepts more forms; we keep it strict
# so that the outer `timeout` bound is always computable).
to_seconds() {
	local v=$1 name=$2
	if [[ $v =~ ^([0-9]+)s?$ ]]; then
		echo "${BASH_REMATCH[1]}"
	elif [[ $v =~ ^([0-9]+)m$ ]]; then
		echo $((BASH_REMATCH[1] * 60))
	else
		die "$name must look like 10s, 2m or 10 (got '$v')"
	fi
}
positive_int() {
	[[ $1 =~ ^[1-9][0-9]*$ ]] || die "$2 must be a positive integer (got '$1')"
	echo "$1"
}

DURATION_S=$(to_seconds "${BENCH_DURATION:-10s}" BENCH_DURATION)
WARMUP_S=$(to_seconds "${BENCH_WARMUP:-2s}" BENCH_WARMUP)
ROUNDS=$(positive_int "${BENCH_ROUNDS:-3}" BENCH_ROUNDS)
CONCURRENCY=$(positive_int "${BENCH_CONCURRENCY:-32}" BENCH_CONCURRENCY)
RATE=$(positive_int "${BENCH_RATE:-2000}" BENCH_RATE)
RATE_CONCURRENCY=$(positive_int "${BENCH_RATE_CONCURRENCY:-64}" BENCH_RATE_CONCURRENCY)
LATENCY_CORRECTION=${BENCH_LATENCY_CORRECTION:-1}
FAKE_LATENCY_MS=${BENCH_FAKE_LATENCY_MS:-0}
STARTUP_TIMEOUT=$(positive_int "${BENCH_STARTUP_TIMEOUT:-30}" BENCH_STARTUP_TIMEOUT)
((DURATION_S > 0)) || die "BENCH_DURATION must be > 0"

GATEWAY_BIN=${MODELGATE_BIN:-target/release/modelgate-dataplane}
FAKE_BIN=${FAKE_PROVIDER_BIN:-target/release/fake-provider}
VKEY=sk-mg-bench-load-0001
BODY='{"model": "bench", "messages": [{"role": "user", "content": "hello"}]}'

command -v python3 >/dev/null || die "python3 is required (bench/report.py and small helpers)"
command -v timeout >/dev/null || die "timeout (coreutils) is required"

# ---------------------------------------------------------------- binaries

for bin in "$GATEWAY_BIN" "$FAKE_BIN"; do
	[[ -x $bin ]] || die "$bin not found or not executable.
  The benchmark needs release builds; run it via 'make bench' (which builds them),
  or build them first: cargo build --release --bins"
done

# oha (load generator, crates.io). An explicitly set OHA must exist; the default one is
# installed into ~/.cache/modelgate on first use.
OHA_DEFAULT=$HOME/.cache/modelgate/bin/oha
OHA=${OHA:-$OHA_DEFAULT}
if ! OHA_BIN=$(command -v "$OHA"); then
	[[ $OHA == "$OHA_DEFAULT" ]] || die "OHA=$OHA not found"
	command -v cargo >/dev/null || die "oha is missing and cargo is not available to install it"
	log "installing oha into $HOME/.cache/modelgate (one-off, takes a few minutes)"
	cargo install oha --locked --root "$HOME/.cache/modelgate" ${OHA_VERSION:+--version "$OHA_VERSION"}
	OHA_BIN=$(command -v "$OHA") || die "oha install did not produce $OHA"
fi
OHA_HELP=$("$OHA_BIN" --help 2>&1) || die "'$OHA_BIN --help' failed:
$OHA_HELP"
OHA_VERSION_STR=$("$OHA_BIN" --version 2>&1 | head -n1) || OHA_VERSION_STR=unknown

# JSON output: recent oha has `--output-format json`; older releases had `-j/--json`.
if grep -q -- '--output-format' <<<"$OHA_HELP"; then
	OHA_JSON=(--output-format json)
elif grep -qE -- '(^|[[:space:],])--json([[:space:],=]|$)' <<<"$OHA_HELP"; then
	OHA_JSON=(--json)
elif grep -qE -- '(^|[[:space:]])-j([[:space:],]|$)' <<<"$OHA_HELP"; then
	OHA_JSON=(-j)
else
	die "cannot find a JSON output flag in '$OHA_BIN --help' ($OHA_VERSION_STR)"
fi
OHA_RATE_EXTRA=()
if [[ $LATENCY_CORRECTION != 0 ]]; then
	if grep -q -- '--latency-correction' <<<"$OHA_HELP"; then
		OHA_RATE_EXTRA=(--latency-correction)
	else
		log "warning: this oha has no --latency-correction; fixed-rate latencies are not corrected"
		LATENCY_CORRECTION=0
	fi
fi

# nginx from Debian.
NGINX=${NGINX:-nginx}
if ! NGINX_BIN=$(command -v "$NGINX" || command -v "/usr/sbin/$NGINX"); then
	[[ $NGINX == nginx ]] || die "NGINX=$NGINX not found"
	command -v apt-get >/dev/null || die "nginx is not installed and apt-get is not available"
	SUDO=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "nginx is not installed; install it (apt-get install nginx) or run as root"
		SUDO=(sudo)
	fi
	log "installing nginx from Debian (apt-get)"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
	NGINX_BIN=$(command -v nginx || command -v /usr/sbin/nginx) || die "apt-get install nginx did not provide an nginx binary"
fi
NGINX_VERSION_STR=$("$NGINX_BIN" -v 2>&1 | head -n1)

# ---------------------------------------------------------------- processes and cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/modelgate-bench.XXXXXX")
RESULTS=${BENCH_RESULTS_DIR:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
PIDS=()
OHA_PID=

cleanup() {
	local rc=$? pid alive _
	trap - EXIT INT TERM
	[[ -n $OHA_PID ]] && PIDS+=("$OHA_PID")
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 50); do # at most 5 s for a graceful exit
		alive=0
		for pid in "${PIDS[@]}"; do
			if kill -0 "$pid" 2>/dev/null; then alive=1; fi
		done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	# Keep the processes' logs next to the results for post-mortems.
	if [[ -d $RESULTS ]]; then
		mkdir -p "$RESULTS/logs"
		cp "$TMP"/*.log "$TMP"/*.yaml "$TMP"/nginx/nginx.conf "$TMP"/nginx/*.log "$RESULTS/logs/" 2>/dev/null || true
	fi
	rm -rf "$TMP"
	((rc == 0)) || log "failed (exit $rc); process logs are in $RESULTS/logs/"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
	local f
	for f in "$@"; do
		[[ -s $f ]] || continue
		printf -- '--- last lines of %s ---\n' "${f#"$TMP"/}" >&2
		tail -n 20 "$f" >&2
	done
}

# wait_for_line FILE REGEX PID WHAT LOGS...: prints the first capture group of the first
# complete line of FILE matching REGEX; fails if PID exits or STARTUP_TIMEOUT passes.
wait_for_line() {
	local file=$1 re=$2 pid=$3 what=$4 line deadline=$((SECONDS + STARTUP_TIMEOUT))
	shift 4
	while ((SECONDS <= deadline)); do
		if [[ -s $file ]]; then
			while IFS= read -r line; do
				if [[ $line =~ $re ]]; then
					printf '%s\n' "${BASH_REMATCH[1]}"
					return 0
				fi
			done <"$file"
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs "$@"
			die "$what exited before printing a line matching /$re/"
		fi
		sleep 0.05
	done
	show_logs "$@"
	die "$what did not print a line matching /$re/ within ${STARTUP_TIMEOUT}s"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http_200 URL PID WHAT: polls GET URL until it answers 200 (bounded by STARTUP_TIMEOUT).
wait_http_200() {
	python3 - "$1" "$2" "$3" "$STARTUP_TIMEOUT" <<'PY' || return 1
import os, sys, time, urllib.error, urllib.request
url, pid, what, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline, last = time.monotonic() + timeout, "no answer"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"{what} exited while waiting for {url} (last: {last})")
    try:
        with opener.open(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
            last = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        last = f"HTTP {e.code}"
    except OSError as e:
        last = str(e)
    time.sleep(0.05)
sys.exit(f"{what}: {url} did not answer 200 within {timeout:.0f}s (last: {last})")
PY
}

# probe NAME URL: one request of the benchmark workload; must be 200 with a chat completion.
probe() {
	python3 - "$1" "$2" "$VKEY" "$BODY" <<'PY'
import json, sys, urllib.error, urllib.request
name, url, key, body = sys.argv[1:5]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
    "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
try:
    with opener.open(req, timeout=10) as r:
        status, data = r.status, r.read()
except urllib.error.HTTPError as e:
    status, data = e.code, e.read()
except OSError as e:
    sys.exit(f"probe {name}: POST {url}: {e}")
if status != 200:
    sys.exit(f"probe {name}: POST {url} -> HTTP {status}: {data[:500].decode(errors='replace')}")
try:
    choices = json.loads(data)["choices"]
    assert isinstance(choices, list) and choices
except Exception:
    sys.exit(f"probe {name}: POST {url} -> 200 but not a chat completion: {data[:500]!r}")
print(f"[bench] probe {name}: HTTP 200, {len(data)} bytes", file=sys.stderr)
PY
}

# ---------------------------------------------------------------- fake upstream

log "starting fake-provider ($FAKE_BIN)"
"$FAKE_BIN" --listen 127.0.0.1:0 --latency-ms "$FAKE_LATENCY_MS" >"$TMP/fake.out.log" 2>"$TMP/fake.err.log" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
FAKE_URL=$(wait_for_line "$TMP/fake.out.log" '^fake-provider listening on (http://127\.0\.0\.1:[0-9]+)[[:space:]]*$' \
	"$FAKE_PID" fake-provider "$TMP/fake.out.log" "$TMP/fake.err.log")
FAKE_PORT=${FAKE_URL##*:}
log "fake-provider at $FAKE_URL"

# ---------------------------------------------------------------- nginx

mkdir -p "$TMP/nginx"
NGINX_USER=""
if ((EUID == 0)); then
	# As root, nginx would switch its workers to `nobody`, which cannot use our private temp dir.
	NGINX_USER="user $(id -un) $(id -gn);"
fi
start_nginx() {
	local port=$1
	cat >"$TMP/nginx/nginx.conf" <<EOF
# Generated by bench/run.sh: nginx as a plain reverse proxy in front of fake-provider.
$NGINX_USER
daemon off;
master_process on;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    keepalive_requests 1000000;
    keepalive_timeout 60s;

    upstream fake_provider {
        server 127.0.0.1:$FAKE_PORT;
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$port;

        location / {
            proxy_pass http://fake_provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
	"$NGINX_BIN" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" ||
		die "nginx rejected the generated config ($TMP/nginx/nginx.conf)"
	"$NGINX_BIN" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
		>"$TMP/nginx.out.log" 2>"$TMP/nginx.err.log" &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
}

# nginx cannot listen on port 0 and report it, so pick a free port (retrying on the small
# race between picking it and nginx binding it).
NGINX_URL=
for attempt in 1 2 3; do
	port=$(free_port)
	log "starting nginx on 127.0.0.1:$port ($NGINX_VERSION_STR)"
	start_nginx "$port"
	python3 - "$port" "$NGINX_PID" "$STARTUP_TIMEOUT" <<'PY' && NGINX_URL=http://127.0.0.1:$port && break
import os, socket, sys, time
port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
	show_logs "$TMP/nginx.err.log" "$TMP/nginx/error.log"
	kill -TERM "$NGINX_PID" 2>/dev/null || true
	wait "$NGINX_PID" 2>/dev/null || true
	log "nginx did not come up on port $port (attempt $attempt)"
done
[[ -n $NGINX_URL ]] || die "could not start nginx"
log "nginx at $NGINX_URL"

# ---------------------------------------------------------------- gateway

cat >"$TMP/bench-config.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: bench-keys}
stringData:
  bench: $VKEY
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: bench}
spec:
  models: [bench]
  deployments:
    - name: fake
      provider: openai-compatible
      model: fake-bench
      baseUrl: $FAKE_URL/v1
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: bench}
spec:
  org: bench
  team: bench
  keySecretRef: {name: bench-keys, key: bench}
  allowedModels: []
EOF

log "starting modelgate-dataplane ($GATEWAY_BIN)"
# The response cache is off: every benchmark request is the same, so with it on this would
# measure cache hits, not the proxy path.
RUST_LOG=${RUST_LOG:-warn} "$GATEWAY_BIN" --config "$TMP/bench-config.yaml" \
	--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --cache off \
	>"$TMP/gateway.out.log" 2>"$TMP/gateway.err.log" &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
GATEWAY_URL=$(wait_for_line "$TMP/gateway.out.log" \
	'^modelgate-dataplane api listening on (http://127\.0\.0\.1:[0-9]+)[[:space:]]*$' \
	"$GATEWAY_PID" modelgate-dataplane "$TMP/gateway.out.log" "$TMP/gateway.err.log")
ADMIN_URL=$(wait_for_line "$TMP/gateway.out.log" \
	'^modelgate-dataplane admin listening on (http://127\.0\.0\.1:[0-9]+)[[:space:]]*$' \
	"$GATEWAY_PID" modelgate-dataplane "$TMP/gateway.out.log" "$TMP/gateway.err.log")
if ! wait_http_200 "$ADMIN_URL/readyz" "$GATEWAY_PID" modelgate-dataplane; then
	show_logs "$TMP/gateway.err.log"
	die "modelgate-dataplane did not become ready"
fi
log "gateway at $GATEWAY_URL (admin $ADMIN_URL), ready"

# ---------------------------------------------------------------- targets

TARGETS=(direct nginx gateway)
declare -A URLS=(
	[direct]=$FAKE_URL/v1/chat/completions
	[nginx]=$NGINX_URL/v1/chat/completions
	[gateway]=$GATEWAY_URL/v1/chat/completions
)
for t in "${TARGETS[@]}"; do
	[[ ${URLS[$t]} == http://127.0.0.1:* ]] || die "refusing non-loopback target ${URLS[$t]}"
	probe "$t" "${URLS[$t]}" || die "target '$t' does not serve the benchmark request"
done

# ---------------------------------------------------------------- metadata

BM_GIT=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
export BM_GIT BM_OHA_VERSION=$OHA_VERSION_STR BM_NGINX_VERSION=$NGINX_VERSION_STR \
	BM_DURATION_S=$DURATION_S BM_WARMUP_S=$WARMUP_S BM_ROUNDS=$ROUNDS \
	BM_CONCURRENCY=$CONCURRENCY BM_RATE=$RATE BM_RATE_CONCURRENCY=$RATE_CONCURRENCY \
	BM_LATENCY_CORRECTION=$LATENCY_CORRECTION BM_FAKE_LATENCY_MS=$FAKE_LATENCY_MS
python3 - "$RESULTS/meta.json" <<'PY'
import json, os, platform, sys, time
cpu = "unknown"
try:
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model", "Hardware") and value.strip():
                cpu = value.strip()
                break
except OSError:
    pass
if cpu == "unknown":
    cpu = platform.processor() or platform.machine() or "unknown"
e = os.environ
meta = {
    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "cpu_model": cpu,
    "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
    "oha_version": e["BM_OHA_VERSION"],
    "nginx_version": e["BM_NGINX_VERSION"].replace("nginx version: ", ""),
    "modelgate_git": e["BM_GIT"],
    "duration_s": int(e["BM_DURATION_S"]),
    "warmup_s": int(e["BM_WARMUP_S"]),
    "rounds": int(e["BM_ROUNDS"]),
    "concurrency": int(e["BM_CONCURRENCY"]),
    "rate": int(e["BM_RATE"]),
    "rate_concurrency": int(e["BM_RATE_CONCURRENCY"]),
    "latency_correction": e["BM_LATENCY_CORRECTION"] != "0",
    "fake_latency_ms": e["BM_FAKE_LATENCY_MS"],
}
with open(sys.argv[1], "w") as f:
    json.dump(meta, f, indent=2)
PY

# ---------------------------------------------------------------- load

# run_oha OUT_PREFIX DURATION_S URL OHA_ARGS...: one bounded oha run, JSON to OUT_PREFIX.json.
run_oha() {
	local out=$1 secs=$2 url=$3 rc=0
	shift 3
	timeout --kill-after=5 "$((secs + 30))" "$OHA_BIN" --no-tui "${OHA_JSON[@]}" -z "${secs}s" "$@" \
		-m POST -H "Authorization: Bearer $VKEY" -H "Content-Type: application/json" -d "$BODY" \
		"$url" >"$out.json" 2>"$out.stderr.log" </dev/null &
	OHA_PID=$!
	wait "$OHA_PID" || rc=$?
	OHA_PID=
	[[ -s $out.stderr.log ]] || rm -f "$out.stderr.log"
	if ((rc != 0)); then
		[[ -f $out.stderr.log ]] && tail -n 20 "$out.stderr.log" >&2
		log "!! oha exited with status $rc for $url"
		return 1
	fi
}

if ((WARMUP_S > 0)); then
	mkdir -p "$TMP/warmup"
	for t in "${TARGETS[@]}"; do
		log "warm-up $t (${WARMUP_S}s, -c $CONCURRENCY)"
		run_oha "$TMP/warmup/$t" "$WARMUP_S" "${URLS[$t]}" -c "$CONCURRENCY" ||
			die "warm-up against $t failed"
		python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$TMP/warmup/$t.json" 2>/dev/null ||
			die "oha did not write JSON with '${OHA_JSON[*]}' ($OHA_VERSION_STR); see $TMP/warmup/$t.json"
	done
fi

FAILED=0
total_runs=$((2 * ROUNDS * ${#TARGETS[@]}))
run_no=0
for mode in concurrency rate; do
	if [[ $mode == concurrency ]]; then
		mode_args=(-c "$CONCURRENCY")
		mode_desc="-c $CONCURRENCY"
	else
		mode_args=(-q "$RATE" -c "$RATE_CONCURRENCY" "${OHA_RATE_EXTRA[@]}")
		mode_desc="-q $RATE -c $RATE_CONCURRENCY${OHA_RATE_EXTRA[*]:+ ${OHA_RATE_EXTRA[*]}}"
	fi
	for ((round = 1; round <= ROUNDS; round++)); do
		# Rotate the order each round so that no target always runs first/last.
		for ((i = 0; i < ${#TARGETS[@]}; i++)); do
			t=${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}
			run_no=$((run_no + 1))
			out=$RESULTS/$mode-r$round-$t
			log "[$run_no/$total_runs] $mode round $round/$ROUNDS: $t (${DURATION_S}s, $mode_desc)"
			if ! run_oha "$out" "$DURATION_S" "${URLS[$t]}" "${mode_args[@]}"; then
				FAILED=1
				continue
			fi
			if ! python3 bench/report.py --check "$out.json" >&2; then
				FAILED=1
			fi
			for pid in "$FAKE_PID" "$NGINX_PID" "$GATEWAY_PID"; do
				kill -0 "$pid" 2>/dev/null || die "a server process (pid $pid) died during the benchmark"
			done
		done
	done
done

# ---------------------------------------------------------------- report

log "results in ${RESULTS#"$REPO_ROOT"/}/"
echo
if ! python3 bench/report.py "$RESULTS" | tee "$RESULTS/report.md"; then
	FAILED=1
fi
if ((FAILED)); then
	die "some runs were not 100% successful (see the !! lines above); the numbers are not valid"
fi
