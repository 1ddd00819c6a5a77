"""What ``emoray submit`` sends: the entrypoint (``run``'s own options, forwarded), the runtime env, token pickup;
and what the entrypoint does with an interpreter that lacks emoray's dependencies.

The real cluster tests are in tests/cluster/; these need no Ray.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from jobs import entrypoint, submit
from pipeline.cli import main
from pipeline.cli.cluster import NOT_FORWARDED, run_arguments

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # on the development machines: no cv2, torch or ray
RUN = main.commands["run"]
FORWARDED = [p for p in RUN.params if p.name not in NOT_FORWARDED]


@pytest.mark.parametrize("argv", [
    ["/data/in", "-o", "/data/out"],
    ["s3://bucket/videos", "gs://other/a.mp4", "-o", "s3://bucket/out?region=eu-west-1"],
    ["-o", "/out", "--fps", "5", "--det-size", "native", "--no-annotate", "--force", "--glob", "*.mp4",
     "--min-face", "40", "--score-threshold", "0.7", "--batch-size", "16", "--device", "cpu",
     "--detector", "/w/Resnet50_Final.pth", "--emotion-model", "mini-xception", "--json", "--", "-x.mp4", "/in/b c.mov"],
])
def test_forwarded_arguments_parse_back_to_the_same_run(argv):
    values = RUN.make_context("run", list(argv)).params
    forwarded = run_arguments(FORWARDED, values)
    again = RUN.make_context("run", list(forwarded)).params
    expected = values | {"paths": tuple(map(submit.cluster_path, values["paths"])), "output": submit.cluster_path(values["output"])}
    assert {k: v for k, v in again.items() if k != "address"} == {k: v for k, v in expected.items() if k != "address"}
    assert "--address" not in forwarded  # the driver joins the cluster it runs on


def test_relative_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = RUN.make_context("run", ["clips", "s3://b/v", "-o", "out"]).params
    forwarded = run_arguments(FORWARDED, values)
    assert forwarded[-3:] == ["--", str(tmp_path / "clips"), "s3://b/v"]
    assert forwarded[forwarded.index("--output") + 1] == str(tmp_path / "out")


def test_the_entrypoint_is_emoray_run_quoted_for_the_shell():
    command = submit.entrypoint(["--fps", "5", "--", "/in/a b.mp4", "/in/$(x).mp4"])
    assert shlex.split(command) == ["python", "-m", "jobs.entrypoint", "run", "--fps", "5", "--", "/in/a b.mp4", "/in/$(x).mp4"]
    assert shlex.split(submit.entrypoint([], python="/opt/venv/bin/python"))[0] == "/opt/venv/bin/python"


def _entrypoint(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "jobs.entrypoint", *args], cwd=ROOT, capture_output=True, text=True)


def test_the_entrypoint_checks_every_dependency_of_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(entrypoint.REQUIRED.values()) == sorted(re.split(r"[<>=!~;\s]", d)[0] for d in dependencies)


def test_the_entrypoint_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import jobs.entrypoint; "
            "print(*sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["jobs", "jobs.entrypoint"]


def test_an_interpreter_without_the_dependencies_fails_in_one_line():
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is absent")
    code = f"import importlib.util as u; print(*[m for m in {list(entrypoint.REQUIRED)!r} if u.find_spec(m) is None])"
    missing = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if not missing:
        pytest.skip(f"{SYSTEM_PYTHON} has every dependency of emoray")
    result = _entrypoint(SYSTEM_PYTHON, "run", "--help")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr and not result.stdout
    line = lines[0]
    assert SYSTEM_PYTHON in line or os.path.realpath(SYSTEM_PYTHON) in line
    assert all(module in line for module in missing) and "--python" in line and "infra/" in line


def test_with_the_dependencies_the_entrypoint_is_emoray():
    help_ = _entrypoint(sys.executable, "run", "--help")
    assert help_.returncode == 0 and "Examples" in help_.stdout
    no_paths = _entrypoint(sys.executable, "run")
    direct = subprocess.run([sys.executable, "-m", "pipeline.cli", "run"], cwd=ROOT, capture_output=True, text=True)
    assert no_paths.returncode == direct.returncode == 2 and no_paths.stderr == direct.stderr


def test_the_runtime_env_ships_the_three_packages_well_under_the_upload_cap(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    env = submit.runtime_env(env_vars={"EMORAY_HOME": "/shared/emoray"})
    assert [Path(m).name for m in env["py_modules"]] == list(submit.PACKAGES)
    assert env["env_vars"] == {"EMORAY_HOME": "/shared/emoray"}
    for module in env["py_modules"]:
        package = tmp_path / f"{Path(module).name}.zip"
        create_package(module, package, include_parent_dir=True, excludes=env["excludes"], include_gitignore=True)
        names = zipfile.ZipFile(package).namelist()
        assert package.stat().st_size < 20e6 and not any("__pycache__" in n or n.endswith(".state.pt") for n in names)
        if module.endswith("models"):
            assert "models/weights/emoray-vgg48-fer2013.pt" in names  # the shipped model travels with the code


@pytest.mark.parametrize("args, message", [
    (["submit", "/in", "-o", "/out", "--env", "NOVALUE"], "expected NAME=VALUE"),
    (["submit", "/in", "-o", "/out", "--fps", "-1"], "--fps"),
    (["submit", "/in"], "Missing option '-o'"),
])
def test_bad_arguments_exit_2_before_contacting_a_cluster(args, message):
    result = CliRunner().invoke(main, [*args, "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and message in result.output


def test_an_unreachable_cluster_is_a_clear_error():
    result = CliRunner().invoke(main, ["status", "raysubmit_x", "--address", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "http://127.0.0.1:9: cannot use the Ray Jobs API" in result.output


@pytest.mark.parametrize("env, expected", [
    ({}, "False"),
    ({"token_file": "1"}, "True"),
    ({"RAY_AUTH_TOKEN": "abc"}, "True"),
    ({"token_file": "1", "RAY_AUTH_MODE": "disabled"}, "False"),
])
def test_a_token_where_ray_keeps_it_turns_token_auth_on(tmp_path, env, expected):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if env.pop("token_file", None):
        (home / ".ray" / "auth_token").write_text("0" * 64)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    code = "from jobs.cluster import use_token_if_available as u; import os; print(u(), os.environ.get('RAY_AUTH_MODE'))"
    result = subprocess.run([sys.executable, "-c", code], env=clean | {"HOME": str(home)} | env,
                            capture_output=True, text=True, check=True)
    exported = "token" if expected == "True" else env.get("RAY_AUTH_MODE", "None")  # what child processes inherit
    assert result.stdout.split() == [expected, exported]


def test_submit_has_every_option_of_run():
    submit_command = main.commands["submit"]
    names = {p.name for p in submit_command.params}
    assert {p.name for p in FORWARDED} <= names
    assert isinstance(next(p for p in submit_command.params if p.name == "paths"), click.Argument)
