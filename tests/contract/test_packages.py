"""`caiyun build` makes packages that import on SCF's layout: layer in /opt, code in /var/user."""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

from caiyun import packaging
from caiyun.cli import main
from caiyun.sandbox import environment as sandbox_environment

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = packaging.function_names(ROOT)


def no_network(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the build tried to reach the network")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`caiyun build --no-wheels` into a fresh directory, with sockets and pip forbidden."""
    out = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        patch.setattr(subprocess, "run", no_network)
        assert main(["build", "--no-wheels", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def unpacked(built: Path) -> Path:
    """The packages unpacked as SCF does: the layer into opt/, each function into var/user/."""
    machine = built / "machine"
    with zipfile.ZipFile(built / "layer.zip") as layer:
        layer.extractall(machine / "opt")
    for name in FUNCTIONS:
        with zipfile.ZipFile(built / "functions" / f"{name}.zip") as function:
            function.extractall(machine / "var" / "user" / name)
    return machine


def test_build_prints_every_zip_with_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--no-wheels", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [tmp_path / "layer.zip", *(tmp_path / "functions" / f"{n}.zip" for n in FUNCTIONS)]
    for path in expected:
        (line,) = [line for line in lines if line.startswith(f"{path} ")]
        assert any(unit in line for unit in (" B ", "KiB", "MiB")), line


def test_build_writes_the_console_for_static_hosting(built: Path) -> None:
    names = sorted(p.name for p in (built / "console").iterdir())
    assert names == ["config.json", "console.css", "console.js", "index.html"]
    assert (
        '<script type="module" src="console.js">' in (built / "console" / "index.html").read_text()
    )


def test_each_function_zip_holds_its_index_at_the_root(built: Path) -> None:
    assert sorted(p.stem for p in (built / "functions").glob("*.zip")) == FUNCTIONS
    for name in FUNCTIONS:
        with zipfile.ZipFile(built / "functions" / f"{name}.zip") as function:
            assert function.namelist() == ["index.py"]
            source = (ROOT / "functions" / name / "index.py").read_bytes()
            assert function.read("index.py") == source


def run_as_scf(
    unpacked: Path, function: str, probe: str, variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``probe`` in the function's code directory with SCF's /var/user:/opt path and only
    ``variables`` in the environment. -S: no site processing, so the editable install of this
    checkout is invisible and `caiyun` can only come from the unpacked layer; third-party
    packages come from the virtualenv's site-packages, standing in for the layer's wheels."""
    code_dir = unpacked / "var" / "user" / function
    third_party = dict.fromkeys(
        [
            *site.getsitepackages(),
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
        ]
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(code_dir), str(unpacked / "opt"), *third_party]),
        "PYTHONDONTWRITEBYTECODE": "x",
        "PATH": os.environ["PATH"],
        **(variables or {}),
    }
    return subprocess.run(
        [sys.executable, "-S", "-c", probe],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_imports_from_the_unpacked_layer_alone(
    unpacked: Path, function: str
) -> None:
    code_dir = unpacked / "var" / "user" / function
    opt = unpacked / "opt"
    probe = (
        "import caiyun, index; "
        "assert callable(index.main_handler); "
        "print(caiyun.__file__); print(index.__file__)"
    )
    result = run_as_scf(unpacked, function, probe)
    assert result.returncode == 0, result.stderr
    caiyun_file, index_file = result.stdout.split()
    assert Path(caiyun_file).is_relative_to(opt)
    assert Path(index_file).is_relative_to(code_dir)


# The operator's packages of the layer: the sandbox, the command line, the self-check.
OPERATOR_ONLY = ("sandbox", "cli", "selfcheck")


def test_the_layer_holds_our_runtime_code_at_its_root_and_nothing_else(built: Path) -> None:
    with zipfile.ZipFile(built / "layer.zip") as layer:
        names = layer.namelist()
        contents = b"".join(layer.read(name) for name in names)
    assert "caiyun/__init__.py" in names
    assert "caiyun/runtime/dispatch.py" in names
    assert not any(name.startswith("python/") for name in names), "SCF does not path /opt/python"
    assert all(name.startswith("caiyun/") for name in names), "--no-wheels: our code only"
    for name in names:
        parts = name.split("/")
        assert not {"tests", "test", "__pycache__", "sandbox", "cli", "selfcheck"} & set(parts), (
            name
        )
        assert name.endswith((".py", "py.typed")), name
        assert parts[-1] not in {"cli.py", "apidoc.py", "packaging.py"}, name
    # The sandbox's fake-service credentials and any private key never travel to the cloud.
    for secret in (sandbox_environment.SANDBOX_SECRET, sandbox_environment.SANDBOX_STAFF_SECRET):
        assert secret.encode() not in contents
    assert b"PRIVATE KEY-----" not in contents


def test_the_same_sources_build_byte_identical_zips(built: Path, tmp_path: Path) -> None:
    packaging.build(tmp_path, root=ROOT, wheels=False)
    assert (tmp_path / "layer.zip").read_bytes() == (built / "layer.zip").read_bytes()
    assert (tmp_path / "functions" / "login.zip").read_bytes() == (
        built / "functions" / "login.zip"
    ).read_bytes()


def test_wheels_are_installed_by_pip_for_the_scf_python_into_the_layer_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> None:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "pydantic").mkdir()
        (target / "pydantic" / "__init__.py").write_text("VERSION = 'wheel'\n")
        (target / "pydantic" / "__pycache__").mkdir()
        (target / "pydantic" / "__pycache__" / "x.cpython-310.pyc").write_bytes(b"\0")
        (target / "bin").mkdir()
        (target / "bin" / "script").write_text("#!/bin/sh\n")

    monkeypatch.setattr(packaging.subprocess, "run", fake_pip)
    assert main(["build", "--out", str(tmp_path), "--python-version", "3.10"]) == 0
    (command,) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--only-binary=:all:" in command
    assert "--platform=manylinux2014_x86_64" in command
    assert command[command.index("--python-version") + 1] == "3.10"
    requirements = packaging.runtime_requirements(ROOT / "pyproject.toml")
    assert command[-len(requirements) :] == requirements
    assert any(r.startswith("pymongo") for r in requirements)
    with zipfile.ZipFile(tmp_path / "layer.zip") as layer:
        names = set(layer.namelist())
    assert {"pydantic/__init__.py", "caiyun/__init__.py"} <= names
    assert not any(".pyc" in name or name.startswith("bin/") for name in names)


def test_a_failed_pip_is_reported_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing_pip(command: list[str], check: bool) -> None:
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(packaging.subprocess, "run", failing_pip)
    assert main(["build", "--out", str(tmp_path), "--platform", "manylinux_2_28_x86_64"]) == 1
    err = capsys.readouterr().err
    assert "pip" in err and "Traceback" not in err
    assert not (tmp_path / "layer.zip").exists()


def test_an_unusable_python_version_is_refused(tmp_path: Path) -> None:
    assert main(["build", "--no-wheels", "--out", str(tmp_path), "--python-version", "py3"]) == 1
    assert not (tmp_path / "layer.zip").exists()


# The first call of a function deployed without its settings, as SCF runs it: the login zip in
# /var/user, the layer in /opt, TENCENTCLOUD_RUNENV=SCF and none of our variables.
SCF_PROBE = """
import json, sys
import index
url_event = {"httpMethod": "POST", "path": "/", "headers": {"content-type": "application/json",
             "x-scf-remote-addr": "203.0.113.7"}, "body": json.dumps({"action": "me"}),
             "queryString": {}}
call_event = {"action": "check_account", "phone": "13800000000",
              "userInfo": {"openId": "o-1", "appId": "wx8c3f5a7b9d1e2f40"}}
context = {"request_id": "req-1", "function_name": "login", "environment": "{}"}
replies = [index.main_handler(url_event, context), index.main_handler(call_event, context)]
print("REPLIES " + json.dumps(replies, ensure_ascii=False))
"""


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, ["CAIYUN_ENV=production is required on a cloud function"]),
        (
            {"CAIYUN_ENV": "production"},
            ["MONGODB_URI is required", "CAIYUN_TOKEN_SECRET", "CAIYUN_ICBC_PRIVATE_KEY"],
        ),
    ],
    ids=["no variables", "only CAIYUN_ENV"],
)
def test_the_built_login_zip_without_its_settings_answers_unavailable_and_logs_what_is_missing(
    unpacked: Path, variables: dict[str, str], named: list[str]
) -> None:
    result = run_as_scf(unpacked, "login", SCF_PROBE, {"TENCENTCLOUD_RUNENV": "SCF", **variables})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    url_reply, call_reply = json.loads(lines[-1].removeprefix("REPLIES "))
    # The function URL answers 503 with the envelope, the CloudBase call the envelope itself.
    assert url_reply["statusCode"] == 503
    for envelope in (json.loads(url_reply["body"]), call_reply):
        assert envelope["ok"] is False
        assert envelope["error"]["code"] == "UNAVAILABLE"
        assert "Traceback" not in json.dumps(envelope)
    logged = [json.loads(line) for line in lines[:-1]]
    assert [line["code"] for line in logged] == ["UNAVAILABLE", "UNAVAILABLE"]
    problems = "; ".join(logged[0]["settings_problems"])
    assert all(name in problems for name in named), problems
