"""docs/kubernetes: the manifests hold what its README promises, and the image's entrypoint
runs cwfs as it says (for real, with fake `cwfs` and `fusermount3` commands on PATH).

No cluster here: the manifests are parsed and their values checked, the shell they run
(the entrypoint, the probes, the preStop hook) is run.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import is_mounted, stat_errno, wait_for

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "docs" / "kubernetes"
ENTRYPOINT = K8S / "cwfs-entrypoint.sh"
MANIFESTS = ["namespace.yaml", "secret.yaml", "daemonset.yaml", "consumer-pod.yaml"]
MANIFESTS += ["sidecar-pod.yaml"]
MOUNTING = ["daemonset.yaml", "sidecar-pod.yaml"]  # the manifests that run cwfs
# Each mounting manifest's --unmount-timeout and grace period, as the README states them.
TIMEOUTS = {"daemonset.yaml": (60, 90), "sidecar-pod.yaml": (120, 180)}
DEAD = "Transport endpoint is not connected"

# -- reading the manifests -----------------------------------------------------------


def documents(name: str) -> list[dict[str, Any]]:
    with open(K8S / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def the(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents(name) if d["kind"] == kind]
    return doc


def pod_spec(name: str) -> dict[str, Any]:
    (doc,) = [d for d in documents(name) if d["kind"] in ("Pod", "DaemonSet")]
    return doc["spec"]["template"]["spec"] if doc["kind"] == "DaemonSet" else doc["spec"]


def cwfs_container(name: str) -> dict[str, Any]:
    spec = pod_spec(name)
    (container,) = [
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "cwfs"
    ]
    return container


def option(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times"
    return str(args[args.index(flag) + 1])


def env_value(container: dict[str, Any], variable: str) -> str:
    (value,) = [e["value"] for e in container["env"] if e["name"] == variable]
    return str(value)


def volume(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in spec["volumes"] if v["name"] == name]
    return found


def mount_holding(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The container's volume mount that ``path`` lies strictly below."""
    (found,) = [
        m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    return found


def size_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)i?", text).groups()  # type: ignore[union-attr]
    return int(number) << (10 * " KMGT".index(unit or " "))


# -- the manifests ---------------------------------------------------------------------


def test_every_manifest_parses_into_named_objects_of_one_namespace():
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted(MANIFESTS)
    namespace = the("namespace.yaml", "Namespace")["metadata"]["name"]
    for name in MANIFESTS:
        for doc in documents(name):
            assert doc["apiVersion"] and doc["metadata"]["name"], name
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, name


@pytest.mark.parametrize("name", MOUNTING)
def test_cwfs_is_privileged_with_dev_fuse(name):
    container = cwfs_container(name)
    context = container["securityContext"]
    assert context.get("privileged") is True or "SYS_ADMIN" in context["capabilities"]["add"]
    (fuse,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/fuse"]
    source = volume(pod_spec(name), fuse["name"])["hostPath"]
    assert source == {"path": "/dev/fuse", "type": "CharDevice"}


@pytest.mark.parametrize("name", MOUNTING)
def test_the_mount_is_made_below_a_volume_that_propagates_both_ways(name):
    container = cwfs_container(name)
    mountpoint = env_value(container, "CWFS_MOUNTPOINT")
    holder = mount_holding(container, mountpoint)
    assert holder["mountPropagation"] == "Bidirectional"
    assert container["securityContext"]["privileged"] is True  # Kubernetes requires it


@pytest.mark.parametrize("name", MOUNTING)
def test_grace_period_outlasts_the_unmount_timeout(name):
    timeout = int(option(cwfs_container(name), "--unmount-timeout"))
    grace = pod_spec(name)["terminationGracePeriodSeconds"]
    assert (timeout, grace) == TIMEOUTS[name]
    assert grace > timeout


@pytest.mark.parametrize("name", MOUNTING)
def test_reads_go_through_lota(name):
    assert option(cwfs_container(name), "--lota") == "on"


@pytest.mark.parametrize("name", MOUNTING)
def test_credentials_come_from_the_secret(name):
    secret = the("secret.yaml", "Secret")
    env = {e["name"]: e for e in cwfs_container(name)["env"]}
    for variable in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        assert "value" not in env[variable]
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": secret["metadata"]["name"], "key": variable}
        assert variable in secret["stringData"]
    assert not any(v.startswith("AWS_") for v in env)  # the token exchange stays commented
    text = (K8S / name).read_text()
    for variable in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        assert f"# - name: {variable}" in text
    assert "https://api.coreweave.com/v1/cwobject/temporary-credentials/api-token" in text


@pytest.mark.parametrize("name", MOUNTING)
def test_staged_and_kept_data_live_on_the_node(name):
    container = cwfs_container(name)
    for flag in ("--cache-dir", "--attribute-store"):
        holder = mount_holding(container, option(container, flag))
        assert volume(pod_spec(name), holder["name"])["hostPath"]["path"] == "/var/lib/cwfs"


@pytest.mark.parametrize("name", MOUNTING)
def test_the_image_is_the_one_the_containerfile_builds(name):
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    (tag,) = set(re.findall(r"-t (\S+) \.", (K8S / "Containerfile").read_text()))
    assert tag == f"registry.example.com/cwfs:{version}"
    assert cwfs_container(name)["image"] == tag
    assert f"-t {tag} ." in (K8S / "README.md").read_text()


def test_memory_budget_fits_under_the_memory_limit():
    container = cwfs_container("daemonset.yaml")
    budget = size_bytes(option(container, "--max-memory"))
    limit = size_bytes(container["resources"]["limits"]["memory"])
    assert budget == 4 << 30 and limit == 6 << 30


def test_daemonset_updates_only_when_told_and_targets_gpu_nodes():
    daemonset = the("daemonset.yaml", "DaemonSet")
    assert daemonset["spec"]["updateStrategy"] == {"type": "OnDelete"}
    spec = pod_spec("daemonset.yaml")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    probe = cwfs_container("daemonset.yaml")["readinessProbe"]
    assert probe["exec"]["command"] == ["cwfs-entrypoint.sh", "check"]


def test_the_daemonset_serves_metrics_where_prometheus_is_told_to_look():
    container = cwfs_container("daemonset.yaml")
    port = int(option(container, "--metrics-port"))
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    annotations = the("daemonset.yaml", "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}


def test_consumer_sees_the_node_mount_without_privilege():
    daemon = cwfs_container("daemonset.yaml")
    holder = mount_holding(daemon, env_value(daemon, "CWFS_MOUNTPOINT"))
    host_dir = volume(pod_spec("daemonset.yaml"), holder["name"])["hostPath"]["path"]
    spec = pod_spec("consumer-pod.yaml")
    (reader,) = spec["containers"]
    (mount,) = reader["volumeMounts"]
    assert volume(spec, mount["name"])["hostPath"]["path"] == host_dir
    assert mount["mountPath"] == holder["mountPath"]  # the same paths inside as in cwfs's
    assert mount["mountPropagation"] == "HostToContainer"
    assert "securityContext" not in reader
    assert spec["securityContext"]["runAsUser"] != 0
    assert "--allow-other" in daemon["args"]  # what lets a user other than root in


def test_sidecar_is_native_and_the_trainer_waits_for_its_mount():
    spec = pod_spec("sidecar-pod.yaml")
    sidecar = cwfs_container("sidecar-pod.yaml")
    assert sidecar in spec["initContainers"] and sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["exec"]["command"] == ["cwfs-entrypoint.sh", "check"]
    holder = mount_holding(sidecar, env_value(sidecar, "CWFS_MOUNTPOINT"))
    assert "emptyDir" in volume(spec, holder["name"])
    (trainer,) = spec["containers"]
    (shared,) = [m for m in trainer["volumeMounts"] if m["name"] == holder["name"]]
    assert shared["mountPropagation"] == "HostToContainer"
    assert shared["mountPath"] == holder["mountPath"]
    assert "/mnt/cwfs/data/" in " ".join(trainer["command"])


def test_containerfile_installs_the_project_fusermount3_and_the_entrypoint():
    text = (K8S / "Containerfile").read_text()
    final = text[text.rindex("\nFROM ") :]  # the stage the image is made of
    assert re.match(r"\nFROM python:3\.\d+-slim", final)
    assert "apt-get install -y --no-install-recommends fuse3" in final
    assert "pip install --no-cache-dir --no-index --find-links /tmp/wheels cwfs" in final
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in text
    assert "COPY docs/kubernetes/cwfs-entrypoint.sh /usr/local/bin/cwfs-entrypoint.sh" in final
    assert 'ENTRYPOINT ["/usr/local/bin/cwfs-entrypoint.sh"]' in final
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:  # the last word is the destination
            assert (ROOT / source).exists(), source


# -- the shell: entrypoint, probe, preStop hook -------------------------------------------


def fake_command(directory: Path, name: str, body: str) -> Path:
    """A script ``name`` in ``directory`` that records its argv (a line each) in
    ``name.argv`` and its PID in ``name.pid``, then runs ``body``."""
    script = directory / name
    record = directory / f"{name}.argv"
    script.write_text(
        f"#!/bin/sh\necho $$ > {directory / name}.pid\nprintf '%s\\n' \"$@\" >> {record}\n{body}\n"
    )
    script.chmod(0o755)
    return record


def calls(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


@pytest.fixture
def fakes(tmp_path):
    """A directory put first on PATH, for fake commands."""
    directory = tmp_path / "bin"
    directory.mkdir()
    return directory


def run_entrypoint(fakes, *args, **env):
    environ = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", **env}
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT), *args], env=environ, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = process.communicate(timeout=30)
    return process, err


@pytest.mark.parametrize("name", MOUNTING)
def test_entrypoint_execs_cwfs_mount_with_the_manifest_args(fakes, tmp_path, name):
    record = fake_command(fakes, "cwfs", "exit 0")
    mountpoint = tmp_path / "mnt" / "data"  # missing: created
    args = cwfs_container(name)["args"]
    process, err = run_entrypoint(
        fakes, *args, CWFS_BUCKET="datasets", CWFS_MOUNTPOINT=str(mountpoint)
    )
    assert process.returncode == 0, err
    assert calls(record) == ["mount", "datasets", str(mountpoint), "--foreground", *args]
    # exec: cwfs is the process Kubernetes signals, not a child of a shell
    assert int((fakes / "cwfs.pid").read_text()) == process.pid
    assert mountpoint.is_dir()


def test_signals_reach_cwfs(fakes, tmp_path):
    fake_command(fakes, "cwfs", "trap 'echo got TERM; exit 0' TERM\nwhile :; do sleep 0.1; done")
    environ = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"}
    environ.update(CWFS_BUCKET="b", CWFS_MOUNTPOINT=str(tmp_path / "m"))
    process = subprocess.Popen(["sh", str(ENTRYPOINT)], env=environ, stdout=subprocess.PIPE)
    wait_for(lambda: (fakes / "cwfs.pid").exists(), timeout=10)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    assert (process.returncode, out) == (0, b"got TERM\n")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CWFS_MOUNTPOINT": "/mnt/x"}, "set CWFS_BUCKET"),
        ({"CWFS_BUCKET": "b"}, "set CWFS_MOUNTPOINT"),
    ],
)
def test_entrypoint_refuses_to_start_without_bucket_or_mount_point(fakes, env, message):
    record = fake_command(fakes, "cwfs", "exit 0")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CWFS_")}
    process = subprocess.run(
        ["sh", str(ENTRYPOINT)], env={**clean, "PATH": f"{fakes}:{clean['PATH']}", **env},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert process.returncode == 2 and message in process.stderr
    assert calls(record) == []


def fake_dead_stat(fakes: Path, dead: Path) -> None:
    """`stat` that fails as on a dead FUSE mount for ``dead``, and is the real one otherwise."""
    real = subprocess.run(["sh", "-c", "command -v stat"], capture_output=True, text=True)
    body = (
        f'for a in "$@"; do [ "$a" = {shlex.quote(str(dead))} ] && '
        f"{{ echo \"stat: cannot statx '$a': {DEAD}\" >&2; exit 1; }}; done\n"
        f'exec {real.stdout.strip()} "$@"'
    )
    fake_command(fakes, "stat", body)


@pytest.mark.parametrize(
    "fusermount, expected, status",
    [
        ("exit 0", ["-u"], 0),  # unmounted
        ('[ "$1" = -uz ]', ["-u", "-uz"], 0),  # busy: detached instead
        ("exit 1", ["-u", "-uz"], 2),  # cannot: cwfs is not started
    ],
)
def test_entrypoint_unmounts_a_dead_mount_first(fakes, tmp_path, fusermount, expected, status):
    mountpoint = tmp_path / "data"
    mountpoint.mkdir()
    fake_dead_stat(fakes, mountpoint)
    unmounts = fake_command(fakes, "fusermount3", fusermount)
    record = fake_command(fakes, "cwfs", "exit 0")
    process, err = run_entrypoint(fakes, CWFS_BUCKET="b", CWFS_MOUNTPOINT=str(mountpoint))
    assert process.returncode == status, err
    assert calls(unmounts) == [arg for flag in expected for arg in (flag, str(mountpoint))]
    assert f"{mountpoint} is a dead FUSE mount" in err
    assert bool(calls(record)) == (status == 0)


def test_entrypoint_leaves_a_healthy_mount_point_alone(fakes, tmp_path):
    unmounts = fake_command(fakes, "fusermount3", "exit 0")
    fake_command(fakes, "cwfs", "exit 0")
    (tmp_path / "data").mkdir()
    process, err = run_entrypoint(fakes, CWFS_BUCKET="b", CWFS_MOUNTPOINT=str(tmp_path / "data"))
    assert process.returncode == 0, err
    assert calls(unmounts) == []


def probe(fakes: Path, mountpoint: Path, name: str = "daemonset.yaml") -> int:
    """Run the manifest's probe command, with the image's entrypoint on PATH."""
    (fakes / "cwfs-entrypoint.sh").unlink(missing_ok=True)
    (fakes / "cwfs-entrypoint.sh").symlink_to(ENTRYPOINT)
    container = cwfs_container(name)
    command = (container.get("readinessProbe") or container["startupProbe"])["exec"]["command"]
    environ = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"}
    environ["CWFS_MOUNTPOINT"] = str(mountpoint)
    return subprocess.run(command, env=environ, capture_output=True, timeout=30).returncode


def test_a_dead_mount_is_refused_by_the_probe_and_cleared_by_the_entrypoint(fakes, bucket, mount):
    """For real: a mount whose process was killed, the real fusermount3 (behind a recorder)."""
    m = mount(bucket)
    for name in MOUNTING:
        assert probe(fakes, m.path, name) == 0  # mounted and answering
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(timeout=30)
    wait_for(lambda: stat_errno(m.path) == errno.ENOTCONN)
    try:
        assert probe(fakes, m.path) == 1
        real = subprocess.run(["sh", "-c", "command -v fusermount3"], capture_output=True)
        unmounts = fake_command(fakes, "fusermount3", f'exec {real.stdout.decode().strip()} "$@"')
        record = fake_command(fakes, "cwfs", "exit 0")
        process, err = run_entrypoint(fakes, CWFS_BUCKET=bucket, CWFS_MOUNTPOINT=str(m.path))
        assert process.returncode == 0, err
        assert calls(unmounts) == ["-u", str(m.path)]
        assert calls(record)[:3] == ["mount", bucket, str(m.path)]
        assert not is_mounted(m.path) and m.path.is_dir()
        assert probe(fakes, m.path) == 1  # a plain directory is not a mount
        assert probe(fakes, Path("/proc")) == 1  # nor is a mount of another filesystem
    finally:
        subprocess.run(["fusermount3", "-uz", str(m.path)], capture_output=True)


@pytest.mark.parametrize("name", MOUNTING)
@pytest.mark.parametrize("unmounted", [True, False], ids=["idle", "busy"])
def test_prestop_unmounts_the_mount_point_and_never_fails(fakes, name, unmounted):
    container = cwfs_container(name)
    unmounts = fake_command(fakes, "fusermount3", "exit 0" if unmounted else "exit 1")
    environ = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}"}
    environ["CWFS_MOUNTPOINT"] = env_value(container, "CWFS_MOUNTPOINT")
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    process = subprocess.run(command, env=environ, capture_output=True, timeout=30)
    assert process.returncode == 0  # busy: SIGTERM comes next, and cwfs waits its uploads
    assert calls(unmounts) == ["-u", "/mnt/cwfs/data"]


# -- the pages ---------------------------------------------------------------------------


def test_yaml_in_the_pages_parses_and_names_the_image():
    image = cwfs_container("daemonset.yaml")["image"]
    blocks = []
    for page in ("README.md", "fleet.md"):
        blocks += re.findall(r"```yaml\n(.*?)```", (K8S / page).read_text(), re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        (doc,) = yaml.safe_load_all(block)
        assert image in block and doc  # a fragment or a whole object, of the same image
    job = yaml.safe_load(blocks[0])
    (warm,) = job["spec"]["template"]["spec"]["containers"]
    assert warm["command"][:2] == ["cwfs", "warm"] and warm["image"] == image


# fleet.md's figures, row by row: the benchmark case and tool each comes from.
FLEET_ROWS = {
    "sequential 1 GiB, cold": ("sequential read 1 GiB, cold", 3),
    "4 parallel readers x 256 MiB": ("4 parallel readers x 256 MiB", 3),
    "sequential, `--direct-io`": ("sequential read 1 GiB, cold", 4),
    "4 parallel, `--direct-io`": ("4 parallel readers x 256 MiB", 4),
}  # column 3 is cwfs, 4 cwfs-dio, in docs/benchmarks.md's tables
SECTIONS = ("Server: embedded server (moto-based, Python)", "Server: `rclone serve s3` (Go)")


def measured(section: str, case: str, column: int) -> tuple[int, float]:
    """MiB/s and mount CPU seconds per GiB of one case in one section of benchmarks.md."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    body = text[text.index(f"## {section}") :]
    body = body[: body.index("\n## ", 1)]
    rows = [line.split("|") for line in body.splitlines() if line.startswith(f"| {case} |")]
    speed = int(rows[0][column].split(" MiB/s")[0])  # the first table: throughput
    cpu = float(re.search(r"mount (\d\.\d\d)", rows[-1][column])[1])  # type: ignore[index]
    return speed, cpu  # the last table: CPU seconds per GiB


def test_fleet_figures_are_the_measured_ones():
    page = (K8S / "fleet.md").read_text()
    assert all(f'"{s}' in page for s in SECTIONS)  # the sections it cites
    for label, (case, column) in FLEET_ROWS.items():
        (row,) = [line for line in page.splitlines() if line.startswith(f"| {label} |")]
        speeds, cpus, cores = (cell.strip() for cell in row.split("|")[2:5])
        figures = [measured(section, case, column) for section in SECTIONS]
        assert speeds == " / ".join(str(s) for s, _ in figures) + " MiB/s", label
        assert cpus == " / ".join(f"{c:.2f}" for _, c in figures), label
        assert cores == " / ".join(f"{s / 1024 * c:.2f}" for s, c in figures), label
