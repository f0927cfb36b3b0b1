"""A single-node Kubernetes cluster of real parts, started inside the namespaces `run.sh` made.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (built from
their Go modules by tests/testbin/build-testbin.sh), containerd and runc from Debian's packages,
the reference CNI plugins on a bridge of its own. Everything runs in a private network, mount
and PID namespace, so its addresses and fixed ports cannot collide with the machine's, its
iptables rules and mounts vanish with it, and no process outlives the run.

Simplifications of a test cluster, none of which changes what a pod sees: every component
authenticates with the one admin certificate, the kubelet admits anonymous requests (it listens
only on the test's private bridge), and the cluster has no DNS: pods reach Services by ClusterIP.
"""

import json
import os
import subprocess
import time
from pathlib import Path

NODE_NAME = "mg-node"
NODE_IP = "10.244.77.1"
POD_SUBNET = "10.244.77.0/24"
SERVICE_RANGE = "10.96.0.0/16"
BRIDGE = "mgbr0"
API_PORT = 6443
PAUSE_IMAGE = "local.invalid/pause:1"
# Directories containerd, runc and the CNI plugins use whatever their config says: a tmpfs over
# each inside the private mount namespace keeps them off the machine.
PRIVATE_DIRS = ["/run/containerd", "/run/netns", "/var/lib/cni"]
START_TIMEOUT = 180


class ClusterError(Exception):
    pass


def wait_for(what, condition, timeout=START_TIMEOUT, interval=0.2):
    """Polls `condition` until it returns something truthy; raises with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs).stdout


class Node:
    def __init__(self, bin_dir, work):
        self.bin = Path(bin_dir)
        self.work = Path(work)
        self.logs = self.work / "logs"
        self.pki = self.work / "pki"
        self.processes = {}
        self.kubeconfig = self.pki / "admin.kubeconfig"
        self.containerd_socket = self.work / "containerd" / "containerd.sock"
        self.cgroup_root = "/" + self.work.name
        self.env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        self.env["PATH"] = f"{self.bin}:{os.environ['PATH']}"

    # -- processes --------------------------------------------------------------------------

    def spawn(self, name, *args):
        log = open(self.logs / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(
            [str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def check_running(self):
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name, lines=40):
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, what, condition, timeout=START_TIMEOUT):
        def checked():
            self.check_running()
            return condition()

        return wait_for(what, checked, timeout)

    def kubectl(self, *args, input=None, check=True):
        result = subprocess.run(
            ["kubectl", *args], env=self.env, input=input, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout if check else result

    def json(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json"))

    # -- start --------------------------------------------------------------------------------

    def start(self):
        for directory in (self.logs, self.pki):
            directory.mkdir(parents=True)
        started = time.monotonic()
        self.network()
        self.certificates()
        self.control_plane()
        self.containerd()
        self.kubelet()
        self.kube_proxy()
        return time.monotonic() - started

    def network(self):
        run("ip", "link", "set", "lo", "up")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # The node itself (the API server calling the injection webhook, the test's own clients)
        # reaches Service IPs too: a route makes them routable, kube-proxy's OUTPUT rules then
        # translate them to a pod on the bridge.
        run("ip", "route", "add", SERVICE_RANGE, "dev", BRIDGE)
        # Pods reach Services through this node: forward, and let iptables see bridged traffic
        # so a reply from a Service's pod to a pod on the same bridge is translated back.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if bridge_nf.exists() and bridge_nf.read_text().strip() != "1":
            bridge_nf.write_text("1")
        for directory in PRIVATE_DIRS:
            Path(directory).mkdir(parents=True, exist_ok=True)
            run("mount", "-t", "tmpfs", "tmpfs", directory)

    def certificates(self):
        pki = self.pki

        def key_and_request(name, subject):
            run(
                "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.csr", "-subj", subject,
            )

        def sign(name, extensions):
            (pki / f"{name}.ext").write_text(extensions)
            run(
                "openssl", "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.crt",
                "-CAkey", pki / "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
                pki / f"{name}.ext", "-out", pki / f"{name}.crt",
            )

        run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", pki / "ca.key", "-out", pki / "ca.crt", "-days", "2",
            "-subj", "/CN=modelgate-cluster-ca",
        )
        key_and_request("apiserver", "/CN=kube-apiserver")
        names = [
            "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost",
            f"IP:{NODE_IP}", "IP:127.0.0.1", "IP:10.96.0.1",
        ]
        sign("apiserver", f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n")
        key_and_request("admin", "/O=system:masters/CN=admin")
        sign("admin", "extendedKeyUsage=clientAuth\n")
        run("openssl", "genrsa", "-out", pki / "sa.key", "2048")
        run("openssl", "rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "cluster", "cluster": {
                        "server": f"https://{NODE_IP}:{API_PORT}",
                        "certificate-authority": str(pki / "ca.crt"),
                    }}],
                    "users": [{"name": "admin", "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    }}],
                    "contexts": [{"name": "admin", "context": {"cluster": "cluster", "user": "admin"}}],
                    "current-context": "admin",
                }
            )
        )

    def control_plane(self):
        pki = self.pki
        self.spawn(
            "etcd", self.bin / "etcd", "--data-dir", self.work / "etcd",
            "--listen-client-urls", "http://127.0.0.1:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--unsafe-no-fsync=true",
        )
        self.spawn(
            "kube-apiserver", self.bin / "kube-apiserver",
            "--etcd-servers=http://127.0.0.1:2379",
            f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
            f"--secure-port={API_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            # The node has no name in DNS: the API server dials its kubelet by IP.
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
        )
        self.wait_for("the API server", lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0)
        self.spawn(
            "kube-controller-manager", self.bin / "kube-controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
        )
        self.spawn(
            "kube-scheduler", self.bin / "kube-scheduler",
            f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1",
        )

    def containerd(self):
        root = self.work / "containerd"
        cni = self.work / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-modelgate.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0",
            "name": "modelgate",
            "plugins": [
                {
                    "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }))
        config = root / "config.toml"
        root.mkdir(exist_ok=True)
        # restrict_oom_score_adj: this machine's sandbox may not lower oom_score_adj, which the
        # pod sandbox otherwise asks of runc (it then fails to start the container at all).
        config.write_text(f"""
version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / 'net.d'}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{root / 'runc'}"
""")
        self.spawn("containerd", "containerd", "--config", config)
        self.wait_for("containerd", lambda: self.ctr("version", check=False).returncode == 0)

    def ctr(self, *args, check=True):
        result = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result

    def import_image(self, archive):
        self.ctr("images", "import", str(archive))

    def cgroups(self):
        """The kubelet's cgroup root, made in every hierarchy (it must exist before the kubelet
        starts; run.sh removes it afterwards). A v1 cpuset starts with no CPUs and no memory
        nodes, so it gets its parent's."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if hierarchy.name == "unified" or not hierarchy.is_dir():
                continue
            group = hierarchy / self.cgroup_root.lstrip("/")
            group.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for setting in ("cpuset.cpus", "cpuset.mems"):
                    (group / setting).write_text((hierarchy / setting).read_text())

    def kubelet(self):
        self.cgroups()
        config = self.work / "kubelet.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            # This kernel mounts cgroup v1, which kubelet 1.35+ refuses unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.work / "pod-logs"),
            # The machine's disk and memory, whatever they hold, never evict the test's pods.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "localStorageCapacityIsolation": False,
            "serializeImagePulls": False,
        }))
        self.spawn(
            "kubelet", self.bin / "kubelet", f"--config={config}", f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.work / 'kubelet'}", f"--cert-dir={self.work / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
        )
        self.wait_for("the node to be Ready", self.node_ready)

    def node_ready(self):
        result = self.kubectl(
            "get", "node", NODE_NAME, "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
        )
        return result.returncode == 0 and result.stdout == "True"

    def kube_proxy(self):
        config = self.work / "kube-proxy.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": POD_SUBNET,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # The conntrack table is the machine's: a network namespace may not resize it.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
        }))
        self.spawn("kube-proxy", self.bin / "kube-proxy", f"--config={config}")
        # The API server's own Service is the first rule kube-proxy writes.
        self.wait_for(
            "kube-proxy's rules",
            lambda: "KUBE-SVC" in run("iptables-save", "-t", "nat"),
        )
