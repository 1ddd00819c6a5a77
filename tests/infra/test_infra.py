"""infra/: each file parses, has what its tool requires, and installs what pyproject.toml declares.

Docker and cloud accounts are not available here: the image is not built and no cluster is
started; the launcher YAML is checked against Ray's own schema, the KubeRay manifests for the
fields of the ray.io/v1 resources.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from jobs.submit import PACKAGES
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DECLARED = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
RAY_VERSION = str(next(iter(DECLARED["ray"].specifier)).version)
IMAGE = "emoray:0.1.0"


def _pins(text: str, package: str) -> list[str]:
    """Versions ``package==X`` is pinned to in install commands of ``text``."""
    return re.findall(rf"""["']?{package}==([0-9][\w.]*)""", text)


def _kuberay(name: str) -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all((INFRA / "kuberay" / name).read_text()) if d]
    return {d["kind"]: d for d in documents}


# ---------------------------------------------------------------- the image


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in (INFRA / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_the_image_is_cuda_based_with_the_project_and_its_weights():
    instructions = _dockerfile()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("nvidia/cuda:") and "runtime" in instructions[0][1]
    copied = {source for kind, args in instructions if kind == "COPY" for source in args.split()[:-1]}
    assert {"pyproject.toml", "README.md", *PACKAGES} <= copied  # what `pip install .` builds from
    assert set(PACKAGES) == {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    runs = " && ".join(args for kind, args in instructions if kind == "RUN")
    assert re.search(r"pip install (\. |\.$)", runs), "the project (and so every declared dependency) is installed"
    assert runs.index("pip install .") < runs.index("emoray models fetch"), "weights are fetched at build time"
    env = " ".join(args for kind, args in instructions if kind == "ENV")
    assert "EMORAY_HOME=" in env and "/opt/venv/bin" in env
    assert "wget" in runs  # KubeRay's readiness and liveness probes call it


def test_the_image_installs_the_torch_pyproject_allows():
    text = (INFRA / "Dockerfile").read_text()
    version = re.search(r"ARG TORCH_VERSION=([\w.]+)", text).group(1)
    assert DECLARED["torch"].specifier.contains(version)
    assert 'pip install "torch==${TORCH_VERSION}"' in text and 'pip install . "torch==${TORCH_VERSION}"' in text


def test_the_build_context_leaves_out_the_venv_tests_and_training_state():
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "**/*.state.pt"} <= set(ignored)


# ---------------------------------------------------------------- the cluster launcher


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((INFRA / "cluster.yaml").read_text())


def test_the_launcher_yaml_passes_rays_own_validation(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher)))  # Ray's JSON schema, with the provider's defaults
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["cpu_worker"]["min_worker"] = 1
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


def test_the_launcher_autoscales_cpu_and_gpu_workers(launcher):
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types and types[launcher["head_node_type"]]["resources"] == {"CPU": 0}
    cpu, gpu = types["cpu_worker"], types["gpu_worker"]
    assert cpu["max_workers"] > cpu["min_workers"] and gpu["max_workers"] > gpu["min_workers"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # AWS GPU instance families
    assert launcher["max_workers"] >= cpu["max_workers"] + gpu["max_workers"]


def test_the_launcher_installs_the_project_and_starts_ray_with_token_auth(launcher):
    setup = "\n".join(launcher["setup_commands"])
    assert all(DECLARED["torch"].specifier.contains(v) for v in _pins(setup, "torch")) and _pins(setup, "torch")
    project = next(target for target, source in launcher["file_mounts"].items() if source == ".")
    assert re.search(rf"pip install --quiet {re.escape(project.replace('/home/ubuntu', '~'))} ", setup)
    assert "ray" not in re.findall(r"pip install[^\n]*?\b(ray)\b", setup)  # Ray comes pinned with the project
    assert "emoray models fetch" in setup
    assert launcher["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    for commands in (launcher["head_start_ray_commands"], launcher["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token ray start" in start
    assert "--head" in " ".join(launcher["head_start_ray_commands"]) and "$RAY_HEAD_IP" in " ".join(launcher["worker_start_ray_commands"])


# ---------------------------------------------------------------- KubeRay


def _check_cluster_spec(spec: dict) -> None:
    """The fields a ray.io/v1 RayClusterSpec needs, as emoray uses them."""
    assert spec["rayVersion"] == RAY_VERSION  # the Ray the image installs, from pyproject's pin
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] == IMAGE and {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert isinstance(group["rayStartParams"], dict) and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["name"] and container["image"] == IMAGE
        assert container["resources"]["limits"] == container["resources"]["requests"]  # Ray sizes nodes from limits
    assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert groups["gpu"]["minReplicas"] >= 1
    claims = [v["persistentVolumeClaim"]["claimName"] for g in [head, *groups.values()] for v in g["template"]["spec"]["volumes"]]
    assert set(claims) == {"emoray-data"}


def test_the_raycluster_manifest():
    documents = _kuberay("raycluster.yaml")
    cluster = documents["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    _check_cluster_spec(cluster["spec"])
    claim = documents["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "emoray-data" and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_rayjob_manifest_runs_a_valid_emoray_run():
    job = _kuberay("rayjob.yaml")["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    command = shlex.split(spec["entrypoint"])
    assert command[:2] == ["emoray", "run"]
    main.commands["run"].make_context("run", command[2:])  # parses as `emoray run` does (click raises otherwise)
    _check_cluster_spec(spec["rayClusterSpec"])


def test_the_readme_explains_each_file_with_its_commands():
    readme = (INFRA / "README.md").read_text()
    for name, command in [("Dockerfile", "docker build -f infra/Dockerfile"), ("cluster.yaml", "ray up infra/cluster.yaml"),
                          ("kuberay/raycluster.yaml", "kubectl apply -f infra/kuberay/raycluster.yaml"),
                          ("kuberay/rayjob.yaml", "kubectl apply -f infra/kuberay/rayjob.yaml")]:
        assert f"`{name}`" in readme and command in readme
