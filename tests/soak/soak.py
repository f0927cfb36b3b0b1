"""`make soak`: the real gateway under a mixed load for N seconds while its config is swapped every
ten seconds and its Redis is restarted halfway, sampling the gateway's RSS, open file descriptors,
threads and runtime tasks every second. Writes the series (CSV) and a plot (PNG), prints a summary,
and fails on any request the scenario does not expect to fail, or on growth past the bounds
below.

Load, from six client threads: complete calls (each prompt new), streamed calls, repeats of one
call (cache hits), calls to a group whose first deployment refuses connections (fallbacks), and
calls with a key whose budget runs out (402 once spent). Expected failures: 402 for the budgeted
key, and 503 `limits_unavailable` while Redis is down (the state store fails closed).

Bounds: during the last tenth of the run, RSS within 1.5x (or 48 MiB above) its level after the
warm-up; at rest after the load, open file descriptors and runtime tasks within 16 of where they
started.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from plot import plot  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-mg-soak-key-000001"
BUDGET_KEY = "sk-mg-soak-budgeted-01"
THREADS = 6

CONFIG = """\
apiVersion: v1
kind: Namespace
metadata: {{name: default, labels: {{modelgate.io/org: soak}}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: keys
  labels: {{modelgate.io/credential: "true", modelgate.io/virtual-key: "true"}}
  annotations: {{modelgate.io/allowed-hosts: "127.0.0.1"}}
stringData: {{main: {key}, budgeted: {budget_key}, upstream: sk-upstream-soak}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: main}}
spec: {{keySecretRef: {{name: keys, key: main}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: budgeted}}
spec:
  keySecretRef: {{name: keys, key: budgeted}}
  budget: {{limit: 0.0002, period: monthly}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: chat}}
spec:
  models: [chat, chat-v{generation}]
  deployments:
    - {{name: fake, provider: openai-compatible, model: soak, baseUrl: "{fake}", credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}, pricing: {{input: 1.0, output: 2.0}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: flaky}}
spec:
  models: [flaky]
  fallbacks: [chat]
  deployments:
    - {{name: dead, provider: openai-compatible, model: soak, baseUrl: "{dead}", credentials: {{secretKeyRef: {{name: keys, key: upstream}}}}, pricing: {{input: 1.0, output: 2.0}}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], workdir: Path, name: str) -> tuple[subprocess.Popen, dict[str, str]]:
    out = open(workdir / f"{name}.out", "w")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(workdir / f"{name}.err", "w"), text=True)
    urls: dict[str, str] = {}
    deadline = time.time() + 60
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        out.write(line)
        if " listening on http://" in line:
            label, url = line.strip().split(" listening on ")
            urls[label] = url
            if name == "fake-provider" or len(urls) == 2:
                break
    threading.Thread(target=lambda: [out.write(l) for l in process.stdout], daemon=True).start()
    if not urls:
        raise SystemExit(f"{name} did not start; see {workdir}")
    return process, urls


class Redis:
    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        for _ in range(50):
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(100):
                if self.process.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    time.sleep(0.05)
            time.sleep(0.1)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


def call(api: str, key: str, model: str, content: str, stream: bool) -> tuple[int, str]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    request = urllib.request.Request(
        f"{api}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            if stream and not text.rstrip().endswith("data: [DONE]"):
                return 599, "a stream without [DONE]"
            return response.status, ""
    except urllib.error.HTTPError as error:
        try:
            code = json.loads(error.read())["error"]["code"]
        except Exception:  # noqa: BLE001 - any unreadable body is reported as such
            code = "unreadable"
        return error.code, code
    except OSError as error:
        return 0, str(error)


def sample(pid: int, admin: str) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        metrics = urllib.request.urlopen(f"{admin}/metrics", timeout=5).read().decode()
        tasks = next(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("modelgate_runtime_alive_tasks "))
    except Exception:  # noqa: BLE001 - a missed scrape is a gap in the series, not a failure
        tasks = float("nan")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
        "tasks": tasks,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--out", default=str(REPO / "target/soak"))
    parser.add_argument("--bin", default=str(REPO / "target/debug"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="modelgate-soak-"))
    processes: list[subprocess.Popen] = []
    redis = Redis(free_port())
    try:
        fake, fake_urls = start([f"{args.bin}/fake-provider", "--listen", "127.0.0.1:0"], workdir, "fake-provider")
        processes.append(fake)
        redis.start()
        dead = f"http://127.0.0.1:{free_port()}/v1"
        config = workdir / "config.yaml"

        def write_config(generation: int) -> None:
            text = CONFIG.format(key=KEY, budget_key=BUDGET_KEY, fake=fake_urls["fake-provider"] + "/v1",
                                 dead=dead, generation=generation)
            staged = workdir / "config.yaml.new"
            staged.write_text(text)
            staged.rename(config)

        write_config(0)
        gateway, urls = start(
            [f"{args.bin}/modelgate-dataplane", "--config", str(config), "--listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0", "--state", f"redis://127.0.0.1:{redis.port}/",
             "--cache", "memory", "--cache-max-bytes", str(8 << 20)],
            workdir,
            "gateway",
        )
        processes.append(gateway)
        api, admin = urls["modelgate-dataplane api"], urls["modelgate-dataplane admin"]
        started = time.time()
        end = started + args.seconds
        redis_down = threading.Event()
        unexpected: list[str] = []
        counts: dict[str, int] = {}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.time() < end:
                kind = rng.choice(["complete", "stream", "hit", "fallback", "budget"])
                model, key, stream, content = "chat", KEY, False, f"soak {rng.random()}"
                if kind == "stream":
                    stream = True
                elif kind == "hit":
                    content = "the same question every time"
                elif kind == "fallback":
                    model = "flaky"
                elif kind == "budget":
                    key = BUDGET_KEY
                status, code = call(api, key, model, content, stream)
                expected = status == 200 or (kind == "budget" and status == 402) or (
                    status == 503 and code == "limits_unavailable" and redis_down.is_set()
                )
                with lock:
                    counts[f"{kind} {status}"] = counts.get(f"{kind} {status}", 0) + 1
                    if not expected:
                        unexpected.append(f"{kind}: {status} {code}")

        workers = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
        baseline = sample(gateway.pid, admin)
        for worker in workers:
            worker.start()
        series: list[dict[str, float]] = []
        marks: list[float] = []
        generation, restarted = 0, False
        while time.time() < end:
            time.sleep(1.0)
            now = time.time() - started
            series.append({"t": round(now, 1), **sample(gateway.pid, admin)})
            if int(now) // 10 > generation:
                generation = int(now) // 10
                write_config(generation)
                marks.append(now)
            if not restarted and now >= args.seconds / 2:
                restarted = True
                redis_down.set()
                redis.kill()
                time.sleep(2)
                redis.start()
                marks.append(time.time() - started)
                # Calls refused while it was down may still be answering: allow a moment.
                threading.Timer(3, redis_down.clear).start()
        for worker in workers:
            worker.join()
        time.sleep(3)
        at_rest = sample(gateway.pid, admin)

        with open(out / "samples.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(series[0]))
            writer.writeheader()
            writer.writerows(series)
        plot(
            {name: [(s["t"], s[name]) for s in series if s[name] == s[name]] for name in ("rss_mib", "fds", "threads", "tasks")},
            str(out / "soak.png"),
            marks,
        )
        warm = [s["rss_mib"] for s in series if args.seconds * 0.1 <= s["t"] <= args.seconds * 0.2] or [series[0]["rss_mib"]]
        late = [s["rss_mib"] for s in series if s["t"] >= args.seconds * 0.9] or [series[-1]["rss_mib"]]
        warm_rss, late_rss = statistics.median(warm), statistics.median(late)
        total = sum(counts.values())
        print(f"soak: {args.seconds} s, {total} requests ({total / args.seconds:.0f}/s), "
              f"{generation} config swaps, Redis restarted once")
        print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        print(f"  RSS {baseline['rss_mib']:.1f} MiB at start, {warm_rss:.1f} after warm-up, {late_rss:.1f} at the end, "
              f"peak {max(s['rss_mib'] for s in series):.1f}")
        print(f"  fds {baseline['fds']} -> {at_rest['fds']} at rest; tasks {baseline['tasks']:.0f} -> "
              f"{at_rest['tasks']:.0f} at rest; threads {baseline['threads']} -> {at_rest['threads']}")
        print(f"  series: {out / 'samples.csv'}, plot: {out / 'soak.png'}")
        failures = []
        if unexpected:
            failures.append(f"{len(unexpected)} unexpected failures, e.g. {unexpected[:5]}")
        if late_rss > max(warm_rss * 1.5, warm_rss + 48):
            failures.append(f"RSS grew from {warm_rss:.1f} to {late_rss:.1f} MiB")
        if at_rest["fds"] > baseline["fds"] + 16:
            failures.append(f"file descriptors grew from {baseline['fds']} to {at_rest['fds']}")
        if at_rest["tasks"] > baseline["tasks"] + 16:
            failures.append(f"runtime tasks grew from {baseline['tasks']:.0f} to {at_rest['tasks']:.0f}")
        for failure in failures:
            print(f"soak FAILED: {failure}", file=sys.stderr)
        return 1 if failures else 0
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.kill()


if __name__ == "__main__":
    sys.exit(main())
