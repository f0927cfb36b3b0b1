"""Container images made on this machine, without a registry or a container engine.

Each image is an OCI image layout in a tar (one uncompressed layer, its config, a manifest and an
index naming the image), which `ctr images import` loads into containerd. What goes in:

- the modelgate image: the release binaries at the paths of the project's Dockerfile, the same
  entrypoint and user, and the shared libraries they load (the Dockerfile's distroless base
  provides exactly those: glibc and libgcc_s);
- pause: the static program every pod sandbox runs;
- an app image: the Python interpreter of the SDK venv, its standard library and the venv's
  packages (the official OpenAI SDK among them), with the shared libraries all of them load.
"""

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

# Packaging tools the app never imports: leaving them out keeps the image small.
SKIPPED_PACKAGES = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "__pycache__"}
SKIPPED_STDLIB = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


class Layer:
    """The files of one image layer, each under its absolute path in the image."""

    def __init__(self):
        self.entries = {}

    def add_file(self, image_path, host_path, mode=None):
        self.entries[image_path] = ("file", Path(host_path), mode)

    def add_tree(self, image_dir, host_dir, skip=()):
        host_dir = Path(host_dir)
        for root, dirs, files in os.walk(host_dir):
            dirs[:] = [d for d in dirs if d not in skip]
            for name in files:
                host = Path(root, name)
                image = f"{image_dir}/{host.relative_to(host_dir)}"
                if host.is_symlink():
                    self.entries[image] = ("symlink", os.readlink(host), None)
                else:
                    self.entries[image] = ("file", host, None)

    def add_symlink(self, image_path, target):
        self.entries[image_path] = ("symlink", target, None)

    def add_libraries_of(self, *binaries):
        """The shared libraries each binary loads (as `ldd` resolves them) and the loader."""
        for binary in binaries:
            output = subprocess.run(
                ["ldd", str(binary)], capture_output=True, text=True
            ).stdout
            for match in re.finditer(r"(/\S+) \(0x", output):
                path = match.group(1)
                self.entries.setdefault(path, ("file", Path(os.path.realpath(path)), None))

    def tar(self):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            made = set()
            for image_path in sorted(self.entries):
                kind, source, mode = self.entries[image_path]
                name = image_path.lstrip("/")
                parts = name.split("/")
                for depth in range(1, len(parts)):
                    parent = "/".join(parts[:depth])
                    if parent not in made:
                        made.add(parent)
                        info = tarfile.TarInfo(parent)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        archive.addfile(info)
                info = tarfile.TarInfo(name)
                if kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, source
                    archive.addfile(info)
                    continue
                stat = source.stat()
                info.size = stat.st_size
                info.mode = mode if mode is not None else (0o755 if stat.st_mode & 0o111 else 0o644)
                with open(source, "rb") as data:
                    archive.addfile(info, data)
        return buffer.getvalue()


def oci_archive(destination, name, layer, entrypoint, user="0:0", env=()):
    """Writes `layer` as the image `name` in an OCI image layout tar at `destination`."""
    blobs = {}

    def blob(media_type, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_tar = layer.tar()
    layer_descriptor = blob("application/vnd.oci.image.layer.v1.tar", layer_tar)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "User": user,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", *env],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_descriptor["digest"]]},
    }
    config_descriptor = blob(
        "application/vnd.oci.image.config.v1+json", json.dumps(config).encode()
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }
    manifest_descriptor = blob(
        "application/vnd.oci.image.manifest.v1+json", json.dumps(manifest).encode()
    )
    manifest_descriptor["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
    with tarfile.open(destination, "w") as archive:

        def put(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        put("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        put("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            put("blobs/sha256/" + digest.split(":", 1)[1], data)


def modelgate_image(destination, name, release_dir):
    """The Dockerfile's image, from the release binaries: same paths, entrypoint and user."""
    layer = Layer()
    binaries = [Path(release_dir, b) for b in ("modelgate-dataplane", "modelgate-operator")]
    for binary in binaries:
        layer.add_file(f"/usr/local/bin/{binary.name}", binary, 0o755)
    layer.add_libraries_of(*binaries)
    oci_archive(
        destination,
        name,
        layer,
        entrypoint=["/usr/local/bin/modelgate-dataplane"],
        user="65532:65532",
    )


def pause_image(destination, name, pause_binary):
    layer = Layer()
    layer.add_file("/pause", pause_binary, 0o755)
    oci_archive(destination, name, layer, entrypoint=["/pause"], user="65535:65535")


def python_app_image(destination, name, venv_python):
    """The venv's interpreter at its own path (so it finds its standard library as it does on
    this machine), the venv's packages on PYTHONPATH, and `python3` on PATH."""
    facts = json.loads(
        subprocess.run(
            [
                venv_python,
                "-c",
                "import json, os, sys, sysconfig; print(json.dumps({"
                "'executable': os.path.realpath(sys.executable),"
                "'stdlib': sysconfig.get_paths()['stdlib'],"
                "'purelib': sysconfig.get_paths()['purelib']}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    layer = Layer()
    layer.add_file(facts["executable"], facts["executable"], 0o755)
    layer.add_symlink("/usr/bin/python3", facts["executable"])
    layer.add_tree(facts["stdlib"], facts["stdlib"], skip=SKIPPED_STDLIB)
    layer.add_tree("/opt/sdk", facts["purelib"], skip=SKIPPED_PACKAGES)
    extensions = [
        source
        for kind, source, _ in list(layer.entries.values())
        if kind == "file" and source.suffix == ".so"
    ]
    layer.add_libraries_of(facts["executable"], *extensions)
    oci_archive(
        destination,
        name,
        layer,
        entrypoint=["/usr/bin/python3"],
        user="1000:1000",
        env=["PYTHONPATH=/opt/sdk", "PYTHONDONTWRITEBYTECODE=1"],
    )
