"""The cluster test (run by tests/cluster/run.sh, inside the namespaces it makes).

On a single-node cluster of real parts (node.py), with images made from the release binaries
(images.py): the README's "Install on Kubernetes" blocks word for word, a client pod served
through the gateway Service, an unmodified OpenAI SDK app served by its injected native sidecar,
a changed ModelGroup reaching every running data plane, a rolling restart of the gateway and the
loss of the operator leader under a steady trickle of requests. Prints what each step took.
"""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import images
from node import NODE_IP, PAUSE_IMAGE, ClusterError, Node, wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE = "modelgate"
TENANT = "team-a"
# The chart's default image (image.repository and the chart's appVersion): the README's install
# command runs with the chart's defaults, so the image must be there under that name.
MODELGATE_IMAGE = "ghcr.io/modelgate/modelgate:0.1.0"
APP_IMAGE = "local.invalid/python-openai:1"
CLIENT_KEY = "sk-mg-cluster-client-2c6f0d4e9a71"
READY_TIMEOUT = 180
CHANGES = 5
GATEWAY_PODS = "app.kubernetes.io/component=gateway"
OPERATOR_PODS = "app.kubernetes.io/component=operator"

# The app of the injected Deployment: no base URL and no key in its code. It makes its call
# once, with retries off, so a sidecar that was not serving yet when the app started fails it.
ASSISTANT = """
import signal, sys, threading
from openai import OpenAI
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
reply = OpenAI(max_retries=0).chat.completions.create(
    model="fake-chat", messages=[{"role": "user", "content": "hello from the assistant pod"}]
)
print("served:", reply.choices[0].message.content, flush=True)
threading.Event().wait()
"""

# A pod that calls the gateway Service once, by the ClusterIP it is given.
CLIENT = """
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["GATEWAY_URL"], max_retries=0)
reply = client.chat.completions.create(
    model="fake-chat", messages=[{"role": "user", "content": "hello from a client pod"}]
)
print("served:", reply.choices[0].message.content, flush=True)
"""


def log(message):
    print(f"[cluster] {message}", flush=True)


class Timings:
    def __init__(self):
        self.rows = []

    def measure(self, name, step, *args):
        started = time.monotonic()
        log(f"== {name}")
        result = step(*args)
        self.rows.append((name, time.monotonic() - started))
        return result

    def report(self):
        print("\n== cluster test timings ==")
        for name, seconds in self.rows:
            print(f"{name:<66} {seconds:7.1f} s")
        print(f"{'total':<66} {sum(s for _, s in self.rows):7.1f} s", flush=True)


def readme_block(marker, language="sh"):
    """The fenced block after `<!-- tested: marker -->` in the README."""
    readme = (REPO / "README.md").read_text()
    after = readme.split(f"<!-- tested: {marker} -->", 1)[1]
    return after.split(f"```{language}\n", 1)[1].split("\n```", 1)[0]


def get_json(url, headers=None):
    """The JSON `url` answers, or None while it does not answer."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def fake_group(base_url, models, namespace=None):
    metadata = f"{{name: fake-chat, namespace: {namespace}}}" if namespace else "{name: fake-chat}"
    return f"""
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {metadata}
spec:
  models: {json.dumps(models)}
  deployments:
    - name: fake
      provider: openai-compatible
      model: fake-model
      baseUrl: {base_url}
      pricing: {{input: 0.15, output: 0.60}}
"""


class ClusterTest:
    def __init__(self, node, fake_url, sdk_python):
        self.node = node
        self.fake_url = fake_url
        self.sdk_python = sdk_python
        self.gateway_ip = None

    def kubectl(self, *args, **kwargs):
        return self.node.kubectl(*args, **kwargs)

    def apply(self, namespace, manifest):
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def bash(self, script, extra_env=None, **kwargs):
        env = dict(self.node.env, **(extra_env or {}))
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
            capture_output=True, text=True, **kwargs,
        )
        if result.returncode != 0:
            raise ClusterError(f"{script}\nfailed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def pods(self, namespace, selector):
        return self.node.json("get", "pods", "-n", namespace, "-l", selector)["items"]

    def pod_names(self, namespace, selector):
        return {p["metadata"]["name"] for p in self.pods(namespace, selector)}

    def live_pods(self, namespace, selector):
        """The pods not being deleted."""
        return [p for p in self.pods(namespace, selector) if not p["metadata"].get("deletionTimestamp")]

    def wait_ready(self, namespace, selector, count):
        def ready():
            pods = self.live_pods(namespace, selector)
            ready = [p for p in pods if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )]
            return ready if len(ready) == count and len(pods) == count else None

        return self.node.wait_for(f"{count} ready pods {selector} in {namespace}", ready, READY_TIMEOUT)

    # -- the README, word for word -----------------------------------------------------------

    def install(self):
        self.bash(readme_block("install"))
        operators = self.wait_ready(RELEASE, OPERATOR_PODS, 2)
        log(f"ready: {[p['metadata']['name'] for p in operators]}")
        # A gateway is ready once it serves a config, and the operator publishes one only where
        # there is something to serve: the next step's objects.
        self.node.wait_for("the gateway pods to run", lambda: [
            p["status"].get("phase") for p in self.pods(RELEASE, GATEWAY_PODS)
        ] == ["Running", "Running"], READY_TIMEOUT)

    def apply_examples(self):
        print(self.bash(readme_block("apply")), flush=True)
        gateways = self.wait_ready(RELEASE, GATEWAY_PODS, 2)
        log(f"ready: {[p['metadata']['name'] for p in gateways]}")

    def call_through_port_forward(self):
        """The README's curl and SDK calls, through its `kubectl port-forward`."""
        python = readme_block("call-python", language="python")
        script = readme_block("call") + f"\necho\n{self.sdk_python} - <<'PYTHON'\n{python}\nPYTHON\n"
        # Its own process group, so the backgrounded port-forward is stopped with it; output to
        # files, since the port-forward holds them open after the script ends.
        out, err = (self.node.logs / "readme-call.out"), (self.node.logs / "readme-call.err")
        with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=self.node.env,
                stdout=stdout_file, stderr=stderr_file, text=True, start_new_session=True,
            )
            try:
                process.wait(timeout=120)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = out.read_text(), err.read_text()
        if process.returncode != 0:
            raise ClusterError(f"the README's call failed:\n{stdout}\n{stderr}")
        # Between kubectl port-forward's own lines: curl's answer, then the SDK's.
        lines = [line for line in stdout.splitlines()
                 if line.strip() and not line.startswith(("Forwarding from", "Handling connection"))]
        assert len(lines) == 2, stdout
        curl_answer, sdk_answer = lines
        answer = json.loads(curl_answer)
        assert answer["object"] == "chat.completion", curl_answer
        assert sdk_answer == answer["choices"][0]["message"]["content"], (sdk_answer, curl_answer)
        log(f"curl through the port-forward: {answer['choices'][0]['message']['content']!r}")
        log(f"the README's SDK snippet: {sdk_answer.strip()!r}")

    # -- a client pod through the Service ------------------------------------------------------

    def client_pod_through_service(self):
        self.gateway_ip = self.kubectl(
            "get", "service", "-n", RELEASE, "modelgate-gateway", "-o", "jsonpath={.spec.clusterIP}"
        )
        self.apply(RELEASE, fake_group(self.fake_url, ["fake-chat"]) + f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: cluster-client-key, labels: {{modelgate.io/virtual-key: "true"}}}}
stringData: {{key: {CLIENT_KEY}}}
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {{name: cluster-client}}
spec:
  keySecretRef: {{name: cluster-client-key, key: key}}
""")
        self.kubectl("wait", "-n", RELEASE, "--for=condition=Ready", "mg/fake-chat", "vk/cluster-client",
                     "--timeout=60s")
        # The gateways serve the new config once every replica says so.
        self.wait_served(RELEASE, "vk/cluster-client")
        self.apply(RELEASE, f"""
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  restartPolicy: Never
  containers:
    - name: client
      image: {APP_IMAGE}
      imagePullPolicy: Never
      args: [-c, {json.dumps(CLIENT)}]
      env:
        - {{name: GATEWAY_URL, value: "http://{self.gateway_ip}:4000/v1"}}
        - name: OPENAI_API_KEY
          valueFrom: {{secretKeyRef: {{name: cluster-client-key, key: key}}}}
""")
        phase = self.node.wait_for("the client pod to finish",
                                   lambda: self.finished_phase(RELEASE, "client"), READY_TIMEOUT)
        output = self.kubectl("logs", "-n", RELEASE, "client")
        assert phase == "Succeeded", f"the client pod {phase}:\n{output}"
        assert output.startswith("served: "), output
        log(f"client pod via {self.gateway_ip}:4000: {output.strip()!r}")

    def finished_phase(self, namespace, pod):
        phase = self.kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else None

    def wait_rolled_out(self, deployment, selector, former_pods):
        """Until the rollout is complete and `former_pods` are gone, not just terminating."""
        self.kubectl("rollout", "status", "-n", RELEASE, f"deployment/{deployment}", "--timeout=180s")
        self.node.wait_for(f"the former {deployment} pods to be gone",
                           lambda: not former_pods & self.pod_names(RELEASE, selector), READY_TIMEOUT)

    def wait_served(self, namespace, resource):
        self.node.wait_for(f"{resource} served by every data plane", lambda: self.kubectl(
            "get", "-n", namespace, resource, "-o",
            "jsonpath={.status.conditions[?(@.type=='Served')].status}",
        ) == "True", READY_TIMEOUT)

    # -- an injected SDK app ------------------------------------------------------------------------

    def injected_app(self):
        self.kubectl("create", "namespace", TENANT)
        self.kubectl("label", "namespace", TENANT, "modelgate.io/org=acme")
        operators = self.pod_names(RELEASE, OPERATOR_PODS)
        self.bash(
            f"helm upgrade {RELEASE} charts/modelgate -n {RELEASE} --reuse-values "
            f"--set 'tenants={{{TENANT}}}' --set 'sidecar.extraArgs={{--decision-log=-}}' --wait=false"
        )
        # The new tenant and sidecar args roll the operators: until the old ones are gone, one of
        # them may answer the webhook with the former sidecar (no decision log on stdout).
        self.wait_rolled_out("modelgate-operator", OPERATOR_PODS, operators)
        self.apply(TENANT, fake_group(self.fake_url, ["fake-chat"]) + """
---
apiVersion: modelgate.io/v1alpha1
kind: VirtualKey
metadata: {name: assistant}
spec: {}
""")
        self.kubectl("wait", "-n", TENANT, "--for=condition=Ready", "mg/fake-chat", "vk/assistant",
                     "--timeout=60s")
        # Until the webhook answers, a pod would be admitted without its sidecar (the chart's
        # failurePolicy is Ignore): wait until a server-side dry run comes back with the sidecar
        # the upgrade asked for.
        probe = f"""
apiVersion: v1
kind: Pod
metadata: {{name: probe, annotations: {{modelgate.io/inject: enabled}}}}
spec: {{containers: [{{name: app, image: {APP_IMAGE}}}]}}
"""
        self.node.wait_for("the injection webhook", lambda: "--decision-log=-" in self.kubectl(
            "create", "--dry-run=server", "-n", TENANT, "-o", "json", "-f", "-", input=probe
        ), READY_TIMEOUT)
        self.apply(TENANT, f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: assistant}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: assistant}}}}
  template:
    metadata:
      labels: {{app: assistant}}
      annotations:
        modelgate.io/inject: enabled
        modelgate.io/virtual-key: assistant
    spec:
      containers:
        - name: app
          image: {APP_IMAGE}
          imagePullPolicy: Never
          args: [-c, {json.dumps(ASSISTANT)}]
""")
        [pod] = self.wait_ready(TENANT, "app=assistant", 1)
        name = pod["metadata"]["name"]
        [sidecar] = [c for c in pod["spec"]["initContainers"] if c["name"] == "modelgate-proxy"]
        assert sidecar.get("restartPolicy") == "Always", "the sidecar is not a native sidecar"
        statuses = {s["name"]: s for s in pod["status"]["initContainerStatuses"] + pod["status"]["containerStatuses"]}
        sidecar_started = statuses["modelgate-proxy"]["state"]["running"]["startedAt"]
        app_started = statuses["app"]["state"]["running"]["startedAt"]
        assert sidecar_started <= app_started, (sidecar_started, app_started)
        output = self.node.wait_for("the app's answer", lambda: self.kubectl(
            "logs", "-n", TENANT, name, "-c", "app") or None, READY_TIMEOUT)
        assert output.startswith("served: "), output
        assert statuses["app"]["restartCount"] == 0, "the app failed before it was served"
        # The decision log is written off the request path, so the record may trail the answer.
        served = self.node.wait_for("the app's call in the sidecar's decision log",
                                    lambda: self.decision_records(name), READY_TIMEOUT)
        log(f"pod {name}: sidecar started {sidecar_started}, app {app_started}; app says {output.strip()!r}")
        log(f"sidecar decision record: key {served[0]['key_id']}, group {served[0]['group']}, "
            f"deployment {served[0]['attempts'][-1]['deployment']}, status {served[0]['status']}")

    def decision_records(self, pod):
        """The sidecar's decision records of a served call under the pod's VirtualKey."""
        records = [json.loads(line) for line in self.kubectl(
            "logs", "-n", TENANT, pod, "-c", "modelgate-proxy").splitlines() if line.startswith("{")]
        return [r for r in records if r.get("endpoint") and r.get("status") == 200
                and str(r.get("key_id", "")).endswith("assistant") and r.get("group") == "fake-chat"]

    # -- a changed ModelGroup reaching every data plane ---------------------------------------------

    def data_planes(self):
        """The admin address of every running data plane: the gateway pods and the sidecar."""
        pods = self.live_pods(RELEASE, GATEWAY_PODS) + self.live_pods(TENANT, "app=assistant")
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}

    @staticmethod
    def checksum(ip):
        return (get_json(f"http://{ip}:9464/readyz") or {}).get("checksum")

    def propagation(self):
        planes = self.data_planes()
        assert len(planes) == 3, planes
        took = []
        for change in range(CHANGES):
            before = {name: self.checksum(ip) for name, ip in planes.items()}
            models = ["fake-chat", f"fake-chat-{change}"]
            manifest = "".join(
                f"---\n{fake_group(self.fake_url, models, namespace).strip()}\n" for namespace in (RELEASE, TENANT)
            )
            started = time.monotonic()
            self.kubectl("apply", "-f", "-", input=manifest)
            arrived = {}

            def all_arrived():
                for name, ip in planes.items():
                    if name not in arrived:
                        now = self.checksum(ip)
                        if now and now != before[name]:
                            arrived[name] = time.monotonic() - started
                return len(arrived) == len(planes)

            wait_for("the change on every data plane", all_arrived, timeout=60, interval=0.01)
            took.append(max(arrived.values()))
            log(f"change {change}: " + ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in sorted(arrived.items())))
        log(f"propagation to {len(planes)} data planes (2 gateway pods, 1 sidecar) from the start of "
            f"kubectl apply, {CHANGES} changes: median {statistics.median(took) * 1000:.0f} ms, "
            f"slowest {max(took) * 1000:.0f} ms")

    # -- disruptions under a trickle of requests ------------------------------------------------------

    def rollout_restart(self):
        old = self.pod_names(RELEASE, GATEWAY_PODS)
        with Trickle(self.gateway_ip) as trickle:
            trickle.wait_for_requests(20)
            self.kubectl("rollout", "restart", "-n", RELEASE, "deployment/modelgate-gateway")
            # The old pods drain after the rollout counts them gone: keep calling until they are.
            self.wait_rolled_out("modelgate-gateway", GATEWAY_PODS, old)
            trickle.wait_for_requests(trickle.count() + 20)
        new = self.pod_names(RELEASE, GATEWAY_PODS)
        assert not old & new, (old, new)
        log(f"rollout restart {sorted(old)} -> {sorted(new)}: {trickle.summary()}")
        trickle.assert_no_failures()

    def lease_holder(self):
        return self.kubectl(
            "get", "lease", "-n", RELEASE, "modelgate-operator", "-o", "jsonpath={.spec.holderIdentity}")

    def holder_other_than(self, former):
        holder = self.lease_holder()
        return holder if holder and not holder.startswith(former) else None

    def operator_loss(self):
        leader = self.lease_holder()
        operators = self.pod_names(RELEASE, OPERATOR_PODS)
        assert any(leader.startswith(pod) for pod in operators), (leader, operators)
        [leader_pod] = [pod for pod in operators if leader.startswith(pod)]
        with Trickle(self.gateway_ip) as trickle:
            trickle.wait_for_requests(20)
            started = time.monotonic()
            self.kubectl("delete", "pod", "-n", RELEASE, leader_pod, "--wait=false")
            successor = self.node.wait_for("a new operator to take the lease",
                                           lambda: self.holder_other_than(leader_pod), READY_TIMEOUT)
            took_over = time.monotonic() - started
            self.wait_ready(RELEASE, OPERATOR_PODS, 2)
            # The new leader publishes: a change reaches the gateways.
            self.apply(RELEASE, fake_group(self.fake_url, ["fake-chat", "fake-chat-after-failover"]))
            self.node.wait_for("the new leader's config on every gateway pod", lambda: all(
                "fake-chat-after-failover" in self.models(ip) for ip in self.gateway_ips()), READY_TIMEOUT)
            trickle.wait_for_requests(trickle.count() + 20)
        log(f"leader {leader_pod} deleted; {successor} took the lease after {took_over:.1f} s; "
            f"{trickle.summary()}")
        trickle.assert_no_failures()

    def gateway_ips(self):
        return {p["status"]["podIP"] for p in self.live_pods(RELEASE, GATEWAY_PODS)}

    @staticmethod
    def models(ip):
        answer = get_json(f"http://{ip}:4000/v1/models", {"Authorization": f"Bearer {CLIENT_KEY}"})
        return {m["id"] for m in (answer or {}).get("data", [])}


class Trickle:
    """Steady requests to the gateway Service (about 20 a second, each on a new connection, as
    clients behind a Service connect), counting every failure."""

    def __init__(self, gateway_ip):
        self.gateway_ip = gateway_ip
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def run(self):
        body = json.dumps({"model": "fake-chat", "messages": [{"role": "user", "content": "trickle"}]})
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
        while not self.stop.is_set():
            connection = http.client.HTTPConnection(self.gateway_ip, 4000, timeout=10)
            try:
                connection.request("POST", "/v1/chat/completions", body, headers)
                response = connection.getresponse()
                text = response.read()
                outcome = None if response.status == 200 else f"{response.status} {text[:200]!r}"
            except (OSError, http.client.HTTPException) as error:
                outcome = repr(error)
            finally:
                connection.close()
            with self.lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append((time.strftime("%H:%M:%S"), outcome))
                self.lock.notify_all()
            self.stop.wait(0.05)

    def count(self):
        with self.lock:
            return self.ok + len(self.failures)

    def wait_for_requests(self, count):
        with self.lock:
            if not self.lock.wait_for(lambda: self.ok + len(self.failures) >= count, timeout=60):
                raise ClusterError(f"the trickle made {self.ok} requests, not {count}")

    def summary(self):
        return f"{self.ok} requests served, {len(self.failures)} failed"

    def assert_no_failures(self):
        assert not self.failures, f"failed requests: {self.failures[:10]}"


def build_images(work, release, bin_dir, sdk_python):
    archives = work / "images"
    archives.mkdir()
    images.modelgate_image(archives / "modelgate.tar", MODELGATE_IMAGE, release)
    images.pause_image(archives / "pause.tar", PAUSE_IMAGE, bin_dir / "pause")
    images.python_app_image(archives / "app.tar", APP_IMAGE, sdk_python)
    return sorted(archives.iterdir())


def start_fake_provider(node, release):
    node.spawn("fake-provider", release / "fake-provider", "--listen", f"{NODE_IP}:0")
    log_file = node.logs / "fake-provider.log"
    line = node.wait_for("the fake provider", lambda: re.search(
        r"listening on (http://\S+)", log_file.read_text()), 30)
    return line.group(1) + "/v1"


def diagnose(node):
    for args in (["get", "pods", "-A", "-o", "wide"], ["get", "events", "-A", "--sort-by=.lastTimestamp"]):
        result = node.kubectl(*args, check=False)
        print(f"\n$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
    for name in node.processes:
        print(f"\n--- {name} (last lines)\n{node.tail(name, 15)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--sdk-python", required=True)
    args = parser.parse_args()

    node = Node(args.bin, args.work)
    node.env["HELM_CACHE_HOME"] = str(args.work / "helm" / "cache")
    node.env["HELM_CONFIG_HOME"] = str(args.work / "helm" / "config")
    node.env["HELM_DATA_HOME"] = str(args.work / "helm" / "data")
    node.env["KUBECACHEDIR"] = str(args.work / "kube-cache")
    timings = Timings()
    try:
        archives = timings.measure("images: build from the release binaries", build_images,
                                   args.work, args.release.resolve(), args.bin, args.sdk_python)
        timings.measure("node: start etcd, control plane, containerd, kubelet, kube-proxy", node.start)
        timings.measure("images: import into containerd", lambda: [node.import_image(a) for a in archives])
        fake_url = start_fake_provider(node, args.release.resolve())
        test = ClusterTest(node, fake_url, args.sdk_python)
        timings.measure("README install: both charts, operator and gateway Ready", test.install)
        timings.measure("README apply: the examples Ready", test.apply_examples)
        timings.measure("README call: curl and SDK through port-forward", test.call_through_port_forward)
        timings.measure("client pod -> gateway Service", test.client_pod_through_service)
        timings.measure("injected SDK app served by its native sidecar", test.injected_app)
        timings.measure(f"ModelGroup change to every data plane (x{CHANGES})", test.propagation)
        timings.measure("rollout restart of the gateway under traffic", test.rollout_restart)
        timings.measure("operator leader deleted under traffic", test.operator_loss)
    except BaseException:
        diagnose(node)
        raise
    finally:
        timings.report()


if __name__ == "__main__":
    try:
        main()
    except (ClusterError, AssertionError) as error:
        print(f"\ncluster test failed: {error!r}", file=sys.stderr)
        sys.exit(1)
