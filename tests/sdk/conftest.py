"""Starts fake-provider and modelgate-dataplane once per session for the OpenAI SDK conformance tests."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import openai
import pytest

import providers

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30.0
LISTENING = re.compile(r"^(?P<label>.+?) listening on (?P<url>http://\S+)$")

SDK_KEY = "sk-mg-sdk-test-0001"
RESTRICTED_KEY = "sk-mg-sdk-restricted"
UPSTREAM_KEY = "sk-fake-upstream-sdk"
# Upstream model ids deliberately differ from the names clients send, so tests can see the rewrite.
UPSTREAM_MODELS = {
    "chat": "fake-chat-upstream",
    "embed": "fake-embedding-upstream",
    "images": "fake-image-upstream",
    "mock-chat": "mock-chat-upstream",
}

CONFIG_TEMPLATE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {{modelgate.io/org: sdk}}
---
apiVersion: modelgate.io/v1alpha1
kind: RoutingPolicy
metadata: {{name: conformance}}
spec: {{teams: [conformance]}}
---
apiVersion: v1
kind: Secret
metadata:
  name: sdk-keys
  labels: {{modelgate.io/credential: "true", modelgate.io/virtual-key: "true"}}
  annotations: {{modelgate.io/allowed-hosts: "127.0.0.1, localhost"}}
stringData:
  sdk-test: {sdk_key}
  restricted: {restricted_key}
  upstream: {upstream_key}
{provider_secrets}
{provider_groups}---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: chat}}
spec:
  models: [gpt-4o-mini, chat]
  tags: [function-calling]
  deployments:
    - name: fake-chat
      provider: openai-compatible
      model: {models[chat]}
      baseUrl: {fake_url}/v1
      credentials: {{secretKeyRef: {{name: sdk-keys, key: upstream}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: embed}}
spec:
  models: [text-embedding-3-small]
  deployments:
    - name: fake-embed
      provider: openai-compatible
      model: {models[embed]}
      baseUrl: {fake_url}/v1
      credentials: {{secretKeyRef: {{name: sdk-keys, key: upstream}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: images}}
spec:
  models: [gpt-image-1]
  deployments:
    - name: fake-images
      provider: openai-compatible
      model: {models[images]}
      baseUrl: {fake_url}/v1
      credentials: {{secretKeyRef: {{name: sdk-keys, key: upstream}}}}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: mock-chat}}
spec:
  models: [mock-chat]
  deployments:
    - name: mock
      provider: mock
      model: {models[mock-chat]}
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: smart}}
spec:
  models: [smart]
  tags: [function-calling]
  fallbacks: [smart-backup]
  deployments:
    - name: smart-text
      provider: openai-compatible
      model: fake-smart-text
      baseUrl: {fake_url}/v1
    - name: smart-vision
      provider: openai-compatible
      model: fake-smart-vision
      baseUrl: {fake_url}/v1
      tags: [vision]
---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: smart-backup}}
spec:
  models: [smart-backup]
  tags: [function-calling]
  deployments:
    - name: smart-backup-text
      provider: openai-compatible
      model: fake-smart-backup
      baseUrl: {fake_url}/v1
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: sdk-test}}
spec:
  org: sdk
  team: conformance
  keySecretRef: {{name: sdk-keys, key: sdk-test}}
  allowedModels: []
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: sdk-restricted}}
spec:
  org: sdk
  team: conformance
  keySecretRef: {{name: sdk-keys, key: restricted}}
  allowedModels: [mock-chat]
"""

# Every process started this session: stopped at teardown, and failing tests show their stderr.
_PROCESSES: list[Process] = []


class Process:
    """A child process whose stdout is read line by line on a thread and whose stderr goes to a file."""

    def __init__(self, name: str, argv: list[str], workdir: Path):
        if not os.access(argv[0], os.X_OK):
            pytest.fail(f"{name} binary not found at {argv[0]}: build it or set its *_BIN variable", pytrace=False)
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr.log"
        with self.stderr_path.open("wb") as stderr:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True, errors="replace"
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        # Draining stdout for the whole run also keeps a chatty child from blocking on a full pipe.
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        _PROCESSES.append(self)

    def _pump_stdout(self) -> None:
        for line in self.popen.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_listening(self, *labels: str, timeout: float = STARTUP_TIMEOUT_S) -> dict[str, str]:
        """Reads stdout until a "<label> listening on <url>" line has appeared for every label."""
        deadline = time.monotonic() + timeout
        urls: dict[str, str] = {}
        while len(urls) < len(labels):
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                self.fail(f"did not print {labels} within {timeout}s")
            if line is None:
                self.fail(f"exited with {self.popen.wait()} before listening")
            match = LISTENING.match(line)
            if match and match["label"] in labels:
                urls[match["label"]] = match["url"].rstrip("/")
        return urls

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    def fail(self, why: str):
        pytest.fail(f"{self.name} {why}\n--- {self.name} stderr (tail) ---\n{self.stderr_tail()}", pytrace=False)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_ready(url: str, process: Process, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            process.fail(f"exited with {process.popen.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # 503 until the config is loaded, or not accepting yet
        time.sleep(0.05)
    process.fail(f"did not answer 200 on {url} within {timeout}s")


def post_json(url: str, payload) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def raw_post(url: str, payload: dict, headers: dict) -> tuple[int, bytes]:
    """POSTs JSON and returns the status and the body exactly as received."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@dataclass(frozen=True)
class Stack:
    api_url: str
    admin_url: str
    fake_url: str
    decision_log: Path
    sdk_key: ClassVar[str] = SDK_KEY
    upstream_key: ClassVar[str] = UPSTREAM_KEY
    upstream_models: ClassVar[dict[str, str]] = UPSTREAM_MODELS

    def fake_requests(self) -> list[dict]:
        """Requests the fake upstream has recorded: [{method, path, headers, body}]."""
        return get_json(f"{self.fake_url}/__fake/requests")

    def script_fake(self, *scripts: dict) -> None:
        """Queues typed scripts (e.g. {"type": "status", "status": 500}) for the fake's next requests."""
        post_json(f"{self.fake_url}/__fake/script", list(scripts))

    def metric(self, name: str) -> float:
        """The value of one unlabelled series on the admin listener's /metrics (0 when absent)."""
        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == name:
                    return float(parts[1])
        return 0.0

    def decision_records(self) -> list[dict]:
        if not self.decision_log.exists():
            return []
        # The last element is "" or a line still being written; only newline-terminated lines are complete.
        lines = self.decision_log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("modelgate-sdk")
    modelgate_bin = os.environ.get("MODELGATE_BIN", str(REPO / "target/debug/modelgate-dataplane"))
    fake_bin = os.environ.get("FAKE_PROVIDER_BIN", str(REPO / "target/debug/fake-provider"))
    try:
        fake = Process("fake-provider", [fake_bin, "--listen", "127.0.0.1:0"], workdir)
        fake_url = fake.wait_listening("fake-provider")["fake-provider"]

        config = workdir / "modelgate.yaml"
        config.write_text(
            CONFIG_TEMPLATE.format(
                sdk_key=SDK_KEY,
                restricted_key=RESTRICTED_KEY,
                upstream_key=UPSTREAM_KEY,
                models=UPSTREAM_MODELS,
                fake_url=fake_url,
                provider_secrets=providers.secret_entries(fake_url),
                provider_groups=providers.model_groups(fake_url),
            )
        )
        decision_log = workdir / "decisions.jsonl"
        gateway = Process(
            "modelgate-dataplane",
            [
                modelgate_bin,
                "--config", str(config),
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--decision-log", str(decision_log),
            ],
            workdir,
        )
        urls = gateway.wait_listening("modelgate-dataplane api", "modelgate-dataplane admin")
        admin_url = urls["modelgate-dataplane admin"]
        wait_ready(f"{admin_url}/readyz", gateway)
        yield Stack(urls["modelgate-dataplane api"], admin_url, fake_url, decision_log)
    finally:
        for process in reversed(_PROCESSES):
            process.stop()


def make_client(stack: Stack, api_key: str, cache: bool = False) -> openai.OpenAI:
    """A client as the suite uses it. Most tests watch each request reach the fake provider, so
    they opt out of the response cache (on by default) with its request header; the cache tests
    use `cached_client`."""
    headers = {} if cache else {"x-modelgate-cache": "false"}
    return openai.OpenAI(
        base_url=f"{stack.api_url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=30,
        default_headers=headers,
    )


@pytest.fixture(scope="session")
def client(stack: Stack) -> openai.OpenAI:
    return make_client(stack, SDK_KEY)


@pytest.fixture(scope="session")
def cached_client(stack: Stack) -> openai.OpenAI:
    """The same key, with the response cache as a client gets it by default."""
    return make_client(stack, SDK_KEY, cache=True)


@pytest.fixture(scope="session")
def restricted_client(stack: Stack) -> openai.OpenAI:
    """Its VirtualKey may only use mock-chat."""
    return make_client(stack, RESTRICTED_KEY)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for process in _PROCESSES:
            if tail := process.stderr_tail():
                report.sections.append((f"{process.name} stderr (tail)", tail))
    return report
