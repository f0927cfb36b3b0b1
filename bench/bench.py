#!/usr/bin/env python3
"""`make bench`: the gateway against nginx as a plain `proxy_pass`, both in front of the same
upstream, which is faster than either (nginx `return 200` for complete answers; nginx with the
echo module for streams), in one interleaved run. Reports, per scenario, RPS, latency added to a
direct call, CPU time per request of the proxy process (from /proc), first-byte latency for
streams, idle CPU, idle and peak RSS, and RSS with 1,000 open streams; ratios to nginx are the
headline. Everything listens on and is sent to 127.0.0.1; every run is bounded in time.

Knobs: BENCH_SECONDS (10), BENCH_ROUNDS (3), OHA (~/.cache/modelgate/bin/oha, installed with
cargo if missing), MODELGATE_BIN (target/release/modelgate-dataplane), BENCH_RESULTS_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
KEY = "sk-mg-bench-load-0001"
# A key of a namespace whose RoutingPolicy commits streams at the provider's head.
HEADERS_KEY = "sk-mg-bench-load-0002"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HEADERS_ROW = "SSE, 20 ms between chunks, `commit: headers`: first byte p50 (ms)"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
})


def sse_chunk(delta: dict, finish=None, usage=None) -> str:
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk)}\\n\\n"


# Twenty events: the role, eighteen words, the finish with usage; then [DONE].
EVENTS = ([sse_chunk({"role": "assistant", "content": ""})]
          + [sse_chunk({"content": f"word{i} "}) for i in range(18)]
          + [sse_chunk({}, "stop", {"prompt_tokens": 9, "completion_tokens": 18, "total_tokens": 27})]
          + ["data: [DONE]\\n\\n"])


def echo_stream(gap: str | None) -> str:
    pause = f" echo_flush; echo_sleep {gap};" if gap else ""
    return "".join(f" echo -n '{event}';{pause}" for event in EVENTS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx(work: Path, name: str, port: int, server: str) -> subprocess.Popen:
    prefix = work / name
    prefix.mkdir()
    # As root, nginx would switch its workers to `nobody`, which cannot use the private temp dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = f"""load_module {ECHO_MODULE};
{user}
daemon off; master_process on; worker_processes auto; pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
    client_body_temp_path {prefix}; proxy_temp_path {prefix};
    fastcgi_temp_path {prefix}; uwsgi_temp_path {prefix}; scgi_temp_path {prefix};
    {server.replace('PORT', str(port))}
}}
"""
    (prefix / "nginx.conf").write_text(conf)
    return subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                             "-e", str(prefix / "error.log")], stderr=subprocess.DEVNULL)


UPSTREAM = f"""server {{
    listen 127.0.0.1:PORT;
    location /complete/ {{ default_type application/json; return 200 '{COMPLETION}'; }}
    location /sse/ {{ default_type text/event-stream;{echo_stream(None)} }}
    location /gap/ {{ default_type text/event-stream;{echo_stream('0.02')} }}
    location /slow/ {{ default_type text/event-stream;{echo_stream('0.5')} }}
}}"""


def proxy(upstream: int) -> str:
    return f"""upstream up {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 1000000; }}
server {{
    listen 127.0.0.1:PORT;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; proxy_request_buffering off; }}
}}"""


def model_group(upstream: int, name: str, path: str, namespace: str = "default") -> str:
    return f"""apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  models: [{name}]
  deployments:
    - name: up
      provider: openai-compatible
      model: bench
      baseUrl: http://127.0.0.1:{upstream}/{path}/v1
      pricing: {{input: 1.0, output: 2.0}}
"""


def virtual_key(key: str, namespace: str = "default") -> str:
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-keys, namespace: {namespace}, labels: {{modelgate.io/virtual-key: "true"}}}}
stringData: {{bench: {key}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: bench, namespace: {namespace}}}
spec:
  keySecretRef: {{name: bench-keys, key: bench}}
"""


def gateway_config(upstream: int) -> str:
    groups = [model_group(upstream, name, path) for name, path in [
        ("bench", "complete"), ("bench-sse", "sse"), ("bench-gap", "gap"), ("bench-slow", "slow")]]
    # A second namespace whose policy commits streams at the provider's head, with its own key
    # and the gapped group.
    latency = """apiVersion: v1
kind: Namespace
metadata: {name: latency}
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: default, namespace: latency}
spec:
  streaming: {commit: headers}
  allowLoopbackUpstreams: true
"""
    return "---\n".join([virtual_key(KEY), *groups, latency,
                          model_group(upstream, "bench-gap", "gap", "latency"),
                          virtual_key(HEADERS_KEY, "latency")])


def family(pid: int) -> list[int]:
    """The process and its children (nginx's workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def memory_kib(pid: int, field: str) -> int:
    total = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def oha(url: str, model: str, args: list[str], stream: bool = False) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    out = subprocess.run(
        [OHA, "--no-tui", "--output-format", "json", "-m", "POST", "-H", f"Authorization: Bearer {KEY}",
         "-H", "Content-Type: application/json", "-d", json.dumps(body), *args, url],
        capture_output=True, text=True, timeout=SECONDS + 60, check=True)
    data = json.loads(out.stdout)
    ok = sum(n for code, n in (data.get("statusCodeDistribution") or {}).items() if code.startswith("2"))
    failed = sum(n for code, n in (data.get("statusCodeDistribution") or {}).items() if not code.startswith("2"))
    errors = {m: n for m, n in (data.get("errorDistribution") or {}).items() if "deadline" not in m.lower()}
    if failed or errors:
        sys.exit(f"{url} {model}: {failed} non-2xx answers, errors {errors}")
    latency = data.get("latencyPercentiles") or {}
    return {"ok": ok, "seconds": data["summary"]["total"], "p50": latency.get("p50", 0) * 1000,
            "p99": latency.get("p99", 0) * 1000}


def first_byte_ms(url: str, model: str, count: int = 40, key: str = KEY) -> float:
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    times = []
    for _ in range(count):
        request = urllib.request.Request(url, data=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read(1)
            times.append((time.perf_counter() - started) * 1000)
            response.read()
    return statistics.median(times)


def wait_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"a process exited while starting (port {port})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def ensure_oha() -> str:
    default = Path.home() / ".cache/modelgate/bin/oha"
    chosen = os.environ.get("OHA", str(default))
    if not shutil.which(chosen):
        subprocess.run(["cargo", "install", "oha", "--locked", "--root",
                        str(Path.home() / ".cache/modelgate")], check=True)
    return chosen


def main() -> None:
    global OHA
    OHA = ensure_oha()
    if not shutil.which("nginx") or not Path(ECHO_MODULE).exists():
        sys.exit("needs nginx and its echo module: apt-get install nginx libnginx-mod-http-echo")
    binary = os.environ.get("MODELGATE_BIN", str(REPO / "target/release/modelgate-dataplane"))
    results = Path(os.environ.get("BENCH_RESULTS_DIR",
                                  REPO / "bench/results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    results.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="modelgate-bench.") as tmp:
        work = Path(tmp)
        try:
            run(work, binary, results, processes)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def run(work: Path, binary: str, results: Path, processes: list) -> None:
    up_port, proxy_port = free_port(), free_port()
    upstream = nginx(work, "upstream", up_port, UPSTREAM)
    processes.append(upstream)
    wait_port(up_port, upstream)
    nginx_proxy = nginx(work, "proxy", proxy_port, proxy(up_port))
    processes.append(nginx_proxy)
    wait_port(proxy_port, nginx_proxy)
    (work / "gateway.yaml").write_text(gateway_config(up_port))
    gw_port, admin_port = free_port(), free_port()
    gateway = subprocess.Popen(
        [binary, "--config", str(work / "gateway.yaml"), "--listen", f"127.0.0.1:{gw_port}",
         "--admin-listen", f"127.0.0.1:{admin_port}", "--cache", "off"],
        stdout=subprocess.DEVNULL, stderr=open(work / "gateway.log", "w"),
        env={**os.environ, "RUST_LOG": "warn"})
    processes.append(gateway)
    wait_port(gw_port, gateway)

    pids = {"nginx": nginx_proxy.pid, "modelgate": gateway.pid}
    urls = {"direct": f"http://127.0.0.1:{up_port}", "nginx": f"http://127.0.0.1:{proxy_port}",
            "modelgate": f"http://127.0.0.1:{gw_port}"}
    # The direct target calls the upstream path itself; the proxies route by model.
    paths = {"bench": "complete", "bench-sse": "sse", "bench-gap": "gap", "bench-slow": "slow"}

    def url(target: str, model: str) -> str:
        if target == "direct":
            return f"{urls['direct']}/{paths[model]}/v1/chat/completions"
        if target == "nginx":
            return f"{urls['nginx']}/{paths[model]}/v1/chat/completions"
        return f"{urls['modelgate']}/v1/chat/completions"

    figures: dict[str, dict[str, float]] = {"nginx": {}, "modelgate": {}}
    # Idle: after one call each (connections set up, lazily built state built), nothing for 5 s.
    for target in ("nginx", "modelgate"):
        oha(url(target, "bench"), "bench", ["-n", "10", "-c", "1"])
    before = {t: cpu_seconds(p) for t, p in pids.items()}
    time.sleep(5)
    for target, pid in pids.items():
        figures[target]["idle CPU (% of a core)"] = (cpu_seconds(pid) - before[target]) / 5 * 100
        figures[target]["idle RSS (MiB)"] = memory_kib(pid, "VmRSS") / 1024

    scenarios = [
        ("1 connection", "bench", ["-c", "1"], False),
        ("32 connections", "bench", ["-c", "32"], False),
        ("2,000 RPS", "bench", ["-q", "2000", "-c", "64", "--latency-correction"], False),
        ("SSE, 32 connections", "bench-sse", ["-c", "32"], True),
    ]
    raw: dict = {}
    for name, model, args, stream in scenarios:
        rounds: dict[str, list] = {t: [] for t in ("direct", "nginx", "modelgate")}
        for r in range(ROUNDS):
            order = ["direct", "nginx", "modelgate"]
            order = order[r % 3:] + order[:r % 3]
            for target in order:
                cpu = cpu_seconds(pids[target]) if target in pids else 0
                result = oha(url(target, model), model, ["-z", f"{SECONDS}s", *args], stream)
                if target in pids:
                    result["cpu_us"] = (cpu_seconds(pids[target]) - cpu) / max(result["ok"], 1) * 1e6
                rounds[target].append(result)
                print(f"[bench] {name} round {r + 1}: {target} {result['ok'] / result['seconds']:.0f} rps "
                      f"p50 {result['p50']:.2f} ms", file=sys.stderr)
        raw[name] = rounds
        for target in ("nginx", "modelgate"):
            runs = rounds[target]
            added = [run["p50"] - direct["p50"] for run, direct in zip(runs, rounds["direct"])]
            figures[target][f"{name}: RPS"] = statistics.median(r["ok"] / r["seconds"] for r in runs)
            figures[target][f"{name}: added p50 (ms)"] = statistics.median(added)
            figures[target][f"{name}: p99 (ms)"] = statistics.median(r["p99"] for r in runs)
            figures[target][f"{name}: CPU per request (µs)"] = statistics.median(r["cpu_us"] for r in runs)

    direct_first = first_byte_ms(url("direct", "bench-gap"), "bench-gap")
    for target in ("nginx", "modelgate"):
        figures[target]["SSE, 20 ms between chunks: first byte p50 (ms)"] = first_byte_ms(
            url(target, "bench-gap"), "bench-gap")
    # The same stream through a policy that commits at the provider's head: what hiding a
    # failover costs. nginx has no such choice; its figure is repeated for the ratio.
    figures["nginx"][HEADERS_ROW] = figures["nginx"]["SSE, 20 ms between chunks: first byte p50 (ms)"]
    figures["modelgate"][HEADERS_ROW] = first_byte_ms(
        url("modelgate", "bench-gap"), "bench-gap", key=HEADERS_KEY)
    print(f"[bench] first byte direct: {direct_first:.2f} ms", file=sys.stderr)

    # 1,000 streams open at once (each 20 events 0.5 s apart): the largest RSS while they run.
    for target in ("nginx", "modelgate"):
        peak, done = 0, threading.Event()

        def sample(pid=pids[target]):
            nonlocal peak
            while not done.is_set():
                peak = max(peak, memory_kib(pid, "VmRSS"))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        oha(url(target, "bench-slow"), "bench-slow", ["-n", "1000", "-c", "1000"], True)
        done.set()
        sampler.join()
        figures[target]["RSS with 1,000 open streams (MiB)"] = peak / 1024
        figures[target]["peak RSS (MiB)"] = memory_kib(pids[target], "VmHWM") / 1024

    (results / "figures.json").write_text(json.dumps({"figures": figures, "runs": raw,
                                                      "direct_first_byte_ms": direct_first}, indent=1))
    report = table(figures, direct_first)
    (results / "report.md").write_text(report)
    print(report)
    print(f"[bench] results in {results}", file=sys.stderr)


def table(figures: dict, direct_first: float) -> str:
    lines = [f"{ROUNDS} rounds x {SECONDS} s, medians; direct first byte {direct_first:.2f} ms", "",
             "| figure | nginx proxy_pass | modelgate | modelgate / nginx |", "| --- | --: | --: | --: |"]
    for name in figures["nginx"]:
        n, m = figures["nginx"][name], figures["modelgate"][name]
        ratio = f"{m / n:.2f}x" if n > 0.005 else "-"
        lines.append(f"| {name} | {n:,.2f} | {m:,.2f} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
