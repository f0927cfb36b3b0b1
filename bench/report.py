#!/usr/bin/env python3
"""Summarise a bench/run.sh results directory as markdown.

    report.py RESULTS_DIR        print the report; exit 1 if any run was not 100% successful
    report.py --check FILE.json  one-line verdict for a single oha run; exit 1 if not clean

Each run is one oha JSON file named <mode>-r<round>-<target>.json. Per run:
  * success = 2xx responses / (all HTTP responses + transport errors). oha's own
    summary.successRate counts any HTTP response (401, 502, ...) as a success, so it is not
    used for the verdict. "aborted due to deadline" entries are the requests still in flight
    when oha's -z timer fired; they are expected and not counted.
  * RPS = 2xx responses / wall time of the run.
  * p50 / p99 = oha's latencyPercentiles (seconds in the JSON, shown in ms).
Latency and RPS cells are medians over rounds; the success cell is the worst round.
"""

import json
import math
import os
import re
import statistics
import sys

TARGETS = ("direct", "nginx", "gateway")
MODES = ("concurrency", "rate")
RUN_FILE = re.compile(r"^(?P<mode>[a-z]+)-r(?P<round>\d+)-(?P<target>[a-z]+)\.json$")


class RunError(Exception):
    pass


def percentile(percentiles, want):
    """Reads p<want> from oha's latencyPercentiles whatever the key spelling
    ("p50", "p50.0", "p99", "p99.0", ...). Returns seconds or None."""
    if not isinstance(percentiles, dict):
        return None
    for key, value in percentiles.items():
        if not isinstance(key, str) or not key.startswith("p"):
            continue
        try:
            p = float(key[1:])
        except ValueError:
            continue
        if abs(p - want) < 1e-9:
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
            return None
    return None


def load_run(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read oha JSON {path}: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise RunError(f"{path}: not an oha JSON report (no 'summary')")
    summary = data["summary"]

    statuses = {}
    for code, count in (data.get("statusCodeDistribution") or {}).items():
        statuses[str(code)] = statuses.get(str(code), 0) + int(count)
    errors, deadline_aborts = {}, 0
    for message, count in (data.get("errorDistribution") or {}).items():
        if "deadline" in message.lower():
            deadline_aborts += int(count)
        else:
            errors[message] = int(count)

    ok = sum(n for code, n in statuses.items() if code.isdigit() and 200 <= int(code) < 300)
    answered = sum(statuses.values()) + sum(errors.values())
    wall = summary.get("total")
    if isinstance(wall, (int, float)) and wall > 0:
        rps = ok / wall
    else:  # very old oha: fall back to its own figure (which also counts failures)
        rps = summary.get("requestsPerSec")
    lat = data.get("latencyPercentiles")
    return {
        "ok": ok,
        "answered": answered,
        "success": (ok / answered) if answered else 0.0,
        "clean": answered > 0 and ok == answered,
        "bad_statuses": {c: n for c, n in statuses.items() if not (c.isdigit() and 200 <= int(c) < 300)},
        "errors": errors,
        "deadline_aborts": deadline_aborts,
        "rps": rps if isinstance(rps, (int, float)) and math.isfinite(rps) else None,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "oha_success_rate": summary.get("successRate"),
    }


def problems(run):
    out = []
    if run["answered"] == 0:
        out.append("no request completed")
    if run["bad_statuses"]:
        out.append("non-2xx: " + ", ".join(f"HTTP {c} x{n}" for c, n in sorted(run["bad_statuses"].items())))
    if run["errors"]:
        out.append("transport errors: " + "; ".join(f"{m} x{n}" for m, n in sorted(run["errors"].items())))
    if run["p50"] is None or run["p99"] is None:
        out.append("no p50/p99 in latencyPercentiles")
    return out


def ms(seconds, signed=False):
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:+.3f}" if signed else f"{seconds * 1000:.3f}"


def ratio(a, b):
    # n/a when either side is missing or not positive (e.g. an "added latency" lost in noise).
    if a is None or b is None or a <= 0 or b <= 0:
        return "n/a"
    return f"{a / b:.2f}x"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def check(path):
    try:
        run = load_run(path)
    except RunError as e:
        print(f"[bench] !! {e}")
        return 1
    name = os.path.basename(path)
    issues = problems(run)
    rps = f"{run['rps']:.0f}" if run["rps"] is not None else "n/a"
    line = (f"{name}: {run['ok']} x 2xx, {rps} rps, p50 {ms(run['p50'])} ms, p99 {ms(run['p99'])} ms, "
            f"success {run['success'] * 100:.2f}%")
    if issues:
        print(f"[bench] !! FAILED {line} -- " + " | ".join(issues))
        return 1
    print(f"[bench]    ok {line}")
    return 0


def report(results_dir):
    meta = {}
    try:
        with open(os.path.join(results_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        pass

    runs, failures = {}, []
    for name in sorted(os.listdir(results_dir)):
        m = RUN_FILE.match(name)
        if not m:
            continue
        key = (m["mode"], m["target"])
        try:
            run = load_run(os.path.join(results_dir, name))
        except RunError as e:
            failures.append(str(e))
            continue
        issues = problems(run)
        if issues:
            failures.append(f"{m['mode']} round {m['round']} {m['target']}: " + " | ".join(issues))
        runs.setdefault(key, []).append(run)

    rounds = meta.get("rounds")
    if rounds:
        for mode in MODES:
            for target in TARGETS:
                got = len(runs.get((mode, target), []))
                if got < rounds:
                    failures.append(f"{mode} {target}: {got} of {rounds} runs have a result")

    out = []
    w = out.append
    w("## modelgate load benchmark")
    w("")
    nproc = meta.get("nproc", "?")
    w(f"- Machine: {nproc} CPU(s), {meta.get('cpu_model', 'unknown CPU')}; {meta.get('kernel', '')}".rstrip("; "))
    w(f"- Load generator: {meta.get('oha_version', 'oha (version unknown)')}, on the same machine; "
      f"proxy floor: {meta.get('nginx_version', 'nginx')} from Debian")
    w(f"- modelgate: {meta.get('modelgate_git', 'unknown')}, release build; upstream: fake-provider "
      f"(latency {meta.get('fake_latency_ms', '0')} ms), 127.0.0.1 only")
    w(f"- Workload: non-streaming POST /v1/chat/completions, small JSON body, keep-alive; "
      f"{meta.get('rounds', '?')} rounds x {meta.get('duration_s', '?')} s per target and mode, "
      f"targets interleaved (order rotated each round) after a {meta.get('warmup_s', '?')} s warm-up")
    w("- Latency and RPS cells are medians over rounds; RPS counts 2xx responses per second of wall "
      "time; success = 2xx / (all HTTP answers + transport errors), worst round shown.")
    w("")

    summary = {}
    for mode in MODES:
        if mode == "concurrency":
            title = f"Fixed concurrency: {meta.get('concurrency', '?')} connections"
        else:
            corr = ", latency corrected for coordinated omission" if meta.get("latency_correction") else ""
            title = (f"Fixed rate: {meta.get('rate', '?')} req/s over "
                     f"{meta.get('rate_concurrency', '?')} connections{corr}")
        if not any(runs.get((mode, t)) for t in TARGETS):
            continue
        w(f"### {title}")
        w("")
        w("| target | p50 ms | p99 ms | RPS | success (worst round) | runs |")
        w("|---|--:|--:|--:|--:|--:|")
        med = {}
        for target in TARGETS:
            rs = runs.get((mode, target), [])
            if not rs:
                w(f"| {target} | n/a | n/a | n/a | n/a | 0 |")
                med[target] = {"p50": None, "p99": None, "rps": None}
                continue
            med[target] = {k: median([r[k] for r in rs]) for k in ("p50", "p99", "rps")}
            rps = med[target]["rps"]
            worst = min(r["success"] for r in rs)
            flag = "" if all(r["clean"] for r in rs) else " !!"
            w(f"| {target}{flag} | {ms(med[target]['p50'])} | {ms(med[target]['p99'])} | "
              f"{'n/a' if rps is None else f'{rps:,.0f}'} | {worst * 100:.2f}% | {len(rs)} |")
        summary[mode] = med
        w("")

        g, n, d = med["gateway"], med["nginx"], med["direct"]
        w("| ratio | gateway / nginx | gateway / direct |")
        w("|---|--:|--:|")
        for label, k in (("p50", "p50"), ("p99", "p99"), ("RPS", "rps")):
            w(f"| {label} | {ratio(g[k], n[k])} | {ratio(g[k], d[k])} |")
        w("")

        def added(k, target):
            a, base = med[target][k], d[k]
            return None if a is None or base is None else a - base

        w("| added over direct | p50 ms | p99 ms |")
        w("|---|--:|--:|")
        w(f"| nginx | {ms(added('p50', 'nginx'), True)} | {ms(added('p99', 'nginx'), True)} |")
        w(f"| gateway | {ms(added('p50', 'gateway'), True)} | {ms(added('p99', 'gateway'), True)} |")
        w(f"| gateway added / nginx added | {ratio(added('p50', 'gateway'), added('p50', 'nginx'))} | "
          f"{ratio(added('p99', 'gateway'), added('p99', 'nginx'))} |")
        w("")

        if mode == "rate" and isinstance(meta.get("rate"), (int, float)):
            short = [t for t in TARGETS if med[t]["rps"] is not None and med[t]["rps"] < 0.95 * meta["rate"]]
            if short:
                w(f"Note: {', '.join(short)} did not sustain the offered {meta['rate']} req/s "
                  f"(below 95%); their latencies include queueing.")
                w("")

    if failures:
        w("### !! Failed runs: these numbers are not valid")
        w("")
        for f in failures:
            w(f"- !! {f}")
        w("")

    print("\n".join(out).rstrip())
    return 1 if failures else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "--check":
        return max(check(p) for p in argv[1:])
    if len(argv) == 1 and os.path.isdir(argv[0]):
        return report(argv[0])
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
