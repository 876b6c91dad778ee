"""The deploy tools' own code, run over our deploy files: what they would send to SCF and
CloudBase. deploy-check/format.js calls tencent-component-toolkit (SCF and trigger formatting,
as multi-scf calls it) and @cloudbase/toolbox (the CloudBase CLI's config loading); scripts/test
installs them from deploy-check/package-lock.json (`npm ci`) when npm is on the machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_values import (
    DEPLOY_SHELL,
    ROOT,
    environment_bytes,
    environment_variables,
    serverless_config,
)

from caiyun.packaging import DEFAULT_PYTHON_VERSION, function_names

CHECK = ROOT / "deploy-check"
FUNCTIONS = function_names(ROOT)
CLIENT_FUNCTIONS = sorted(set(FUNCTIONS) - {"scheduler"})
CLOUDBASE_SHELL = {
    "ENV_ID": "caiyun-prod-1g2h3j4k",
    "SCF_VPC_ID": DEPLOY_SHELL["SCF_VPC_ID"],
    "SCF_SUBNET_ID": DEPLOY_SHELL["SCF_SUBNET_ID"],
    "CAIYUN_SSM_REGION": "ap-guangzhou",
    "CAIYUN_SSM_SECRET_ID": "AKID" + "r3adOnlySsmUser0" * 2,
    "CAIYUN_SSM_SECRET_KEY": "k3yOfTheReadOnlySsmUser000000001",
    **{k: v for k, v in DEPLOY_SHELL.items() if k.startswith("CAIYUN_")},
    "CAIYUN_ICBC_NOTIFY_URL": "https://caiyun-prod-1g2h3j4k.service.tcloudbase.com/icbc/notify",
}


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not on this machine: the deploy tools cannot be run")
    if not (CHECK / "node_modules" / "tencent-component-toolkit").is_dir():
        pytest.skip(
            "deploy-check/node_modules is missing: `npm ci --prefix deploy-check` installs the "
            "deploy tools (scripts/test does it when npm is on the machine)"
        )
    return found


def run_tool(node: str, kind: str, file: Path, shell: dict[str, str]) -> Any:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **shell}
    done = subprocess.run(
        [node, str(CHECK / "format.js"), kind, str(file)],
        cwd=file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def deployed(node: str) -> dict[str, Any]:
    return run_tool(node, "serverless", ROOT / "serverless.yml", DEPLOY_SHELL)


def test_every_function_is_created_as_the_layer_and_handler_need(
    deployed: dict[str, Any],
) -> None:
    created = {f["FunctionName"]: f for f in deployed["functions"]}
    assert set(created) == {f"caiyun-home-prod-caiyun-{name}" for name in FUNCTIONS}
    for name, params in created.items():
        assert params["Runtime"] == f"Python{DEFAULT_PYTHON_VERSION}", name
        assert params["Type"] == "Event" and params["Handler"] == "index.main_handler", name
        # CreateFunction's LayerVersion is an integer.
        assert params["Layers"] == [{"LayerName": "caiyun-common", "LayerVersion": 1}], name
        assert params["VpcConfig"] == {
            "VpcId": DEPLOY_SHELL["SCF_VPC_ID"],
            "SubnetId": DEPLOY_SHELL["SCF_SUBNET_ID"],
        }
        assert params["Role"] == DEPLOY_SHELL["SCF_ROLE"]
        assert params["PublicNetConfig"]["PublicNetStatus"] == "ENABLE"
    assert created["caiyun-home-prod-caiyun-admin"]["Timeout"] == 60
    assert created["caiyun-home-prod-caiyun-scheduler"]["MemorySize"] == 512


def test_every_function_receives_every_variable_and_they_fit(deployed: dict[str, Any]) -> None:
    expected = environment_variables()
    for params in deployed["functions"]:
        variables = {v["Key"]: v["Value"] for v in params["Environment"]["Variables"]}
        assert variables == expected, params["FunctionName"]
        assert environment_bytes(variables) <= 4096


def test_the_old_environment_key_would_have_reached_no_function(node: str, tmp_path: Path) -> None:
    # The shape this file had before: `environment:` on each function. multi-scf's formatter
    # replaces it with an empty set, so every function started with none of our variables.
    config = serverless_config()
    entries = config["inputs"].pop("environments")
    for declared in config["inputs"]["functions"].values():
        declared["environment"] = entries
    old = tmp_path / "serverless.yml"
    old.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    for params in run_tool(node, "serverless", old, DEPLOY_SHELL)["functions"]:
        assert params["Environment"]["Variables"] == [], params["FunctionName"]


def test_every_client_function_and_icbc_get_a_url_and_the_scheduler_its_timer(
    deployed: dict[str, Any],
) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for trigger in deployed["triggers"]:
        by_type.setdefault(trigger["Type"], []).append(trigger)
    assert sorted(by_type) == ["http", "timer"]
    urls = {t["FunctionName"]: json.loads(t["TriggerDesc"]) for t in by_type["http"]}
    assert set(urls) == {f"caiyun-home-prod-caiyun-{name}" for name in CLIENT_FUNCTIONS}
    for desc in urls.values():
        assert desc == {
            "AuthType": "NONE",
            "NetConfig": {"EnableIntranet": False, "EnableExtranet": True},
        }
    [timer] = by_type["timer"]
    assert timer["FunctionName"] == "caiyun-home-prod-caiyun-scheduler"
    assert timer["Enable"] == "OPEN"
    assert len(timer["TriggerDesc"].split()) == 7


def api_gateway_option() -> list[dict[str, Any]]:
    """The optional API Gateway trigger docs/deploy.md offers, as its YAML block."""
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- api-gateway-option -->\s*```yaml\n(.*?)```", guide, re.S)
    assert block, "docs/deploy.md lost its API Gateway block"
    return yaml.safe_load(block.group(1))


def test_the_api_gateway_option_loses_integrated_response_as_the_guide_warns(
    node: str, tmp_path: Path
) -> None:
    config = serverless_config()
    config["inputs"]["triggers"] += api_gateway_option()
    with_gateway = tmp_path / "serverless.yml"
    with_gateway.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    [gateway] = [
        t
        for t in run_tool(node, "serverless", with_gateway, DEPLOY_SHELL)["triggers"]
        if t.get("type") == "apigw"
    ]
    routes = {
        (api["requestConfig"]["path"], api["serviceScfFunctionName"]) for api in gateway["apis"]
    }
    expected = {(f"/api/{n}", f"caiyun-home-prod-caiyun-{n}") for n in CLIENT_FUNCTIONS}
    expected.remove(("/api/icbc_callback", "caiyun-home-prod-caiyun-icbc_callback"))
    expected.add(("/icbc/notify", "caiyun-home-prod-caiyun-icbc_callback"))
    assert routes == expected
    # Whatever the file says, multi-scf rebuilds each API's function block without the flag.
    assert {api["serviceScfIsIntegratedResponse"] for api in gateway["apis"]} == {False}


@pytest.fixture(scope="module")
def cloudbase(node: str) -> dict[str, Any]:
    return run_tool(node, "cloudbase", ROOT / "cloudbaserc.json", CLOUDBASE_SHELL)


def test_the_cloudbase_cli_loads_every_function_with_layer_timer_and_settings(
    cloudbase: dict[str, Any],
) -> None:
    assert cloudbase["envId"] == CLOUDBASE_SHELL["ENV_ID"]
    root = ROOT / cloudbase["functionRoot"]
    functions = {f["name"]: f for f in cloudbase["functions"]}
    assert sorted(functions) == FUNCTIONS
    for name, declared in functions.items():
        # `tcb fn deploy` uploads <functionRoot>/<name>, whose index.py is the handler's file.
        assert (root / name / "index.py").is_file()
        assert declared["runtime"] == f"Python{DEFAULT_PYTHON_VERSION}"
        assert declared["handler"] == "index.main_handler"
        assert declared["layers"] == [{"name": "caiyun-common", "version": 1}]
        assert declared["vpc"]["vpcId"] == DEPLOY_SHELL["SCF_VPC_ID"]
        variables = declared["envVariables"]
        assert variables["CAIYUN_ENV"] == "production"
        assert variables["CAIYUN_CLOUDBASE_ENV"] == CLOUDBASE_SHELL["ENV_ID"]
        assert variables["CAIYUN_SSM_SECRET"] == DEPLOY_SHELL["CAIYUN_SSM_SECRET"]
        assert environment_bytes(variables) <= 4096
    [timer] = functions["scheduler"]["triggers"]
    assert timer["type"] == "timer" and len(timer["config"].split()) == 7
    assert all("triggers" not in f for n, f in functions.items() if n != "scheduler")
