"""The checked-in API reference is what `caiyun docs` generates from the code today."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from caiyun import apidoc, labels
from caiyun.contract import login, notify
from caiyun.deeplinks import DEEP_LINKS
from caiyun.domain import appconfig
from caiyun.errors import DETAILS
from caiyun.sandbox.functions import function_names, handler

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "api"


def test_checked_in_api_reference_matches_the_action_tables() -> None:
    generated = apidoc.render()
    stale = [
        name
        for name, text in generated.items()
        if not (REFERENCE / name).is_file()
        or (REFERENCE / name).read_text(encoding="utf-8") != text
    ]
    extra = sorted(p.name for p in REFERENCE.iterdir() if p.is_file() and p.name not in generated)
    assert (stale, extra) == ([], []), "run `caiyun docs` and commit docs/api"


def test_every_action_of_every_function_has_a_documented_section() -> None:
    for name in function_names():
        page = (REFERENCE / f"{name}.md").read_text(encoding="utf-8")
        for action in handler(name).actions:
            assert f"\n## {action}\n" in page, f"{name}.{action} is not documented"


# ------------------------------------------------------------------- what the reference holds


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    """Every request and reply schema and every nested type, as (where, schema)."""
    found = []
    for name in function_names():
        for action_name, action in handler(name).actions.items():
            for model in (action.request, action.reply):
                if model is None:
                    continue
                schema = model.model_json_schema()
                found.append((f"{name}.{action_name} {model.__name__}", schema))
                for def_name, nested in schema.get("$defs", {}).items():
                    found.append((f"{name}.{action_name} {def_name}", nested))
    return found


def _literals(schema: Any) -> list[list[Any]]:
    """The value sets of every literal (enum) inside a schema."""
    if isinstance(schema, dict):
        own = [schema["enum"]] if "enum" in schema else []
        return own + [v for value in schema.values() for v in _literals(value)]
    if isinstance(schema, list):
        return [v for value in schema for v in _literals(value)]
    return []


def test_every_literal_of_every_model_is_an_enumeration_with_labels() -> None:
    unlabelled = {
        f"{where}: {values}"
        for where, schema in _schemas()
        for values in _literals(schema)
        if apidoc.enum_kind(values) is None
    }
    assert unlabelled == set()
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for kind, codes in labels.LABELS.items():
        assert f'<a id="enum-{kind}"></a>' in readme
        for code, label in codes.items():
            assert f"| `{code}` | {label} |" in readme, (kind, code)


# A reply field holding a code carries ``<field>_name``, except these: the agreement's label is
# its ``title``, and which storage answered is for the app's code, not for people.
NO_LABEL_NEEDED = {
    ("AgreementText", "code"),
    ("AgreementText", "required_when"),
    ("UploadUrlReply", "provider"),
}


def test_every_code_in_a_reply_has_its_label_beside_it() -> None:
    missing = set()
    for name in function_names():
        for action in handler(name).actions.values():
            if action.reply is None:
                continue
            top = action.reply.model_json_schema()
            for model_name, schema in [
                (action.reply.__name__, top),
                *top.get("$defs", {}).items(),
            ]:
                props = schema.get("properties", {})
                for field, prop in props.items():
                    coded = _literals(
                        {k: v for k, v in prop.items() if k != "additionalProperties"}
                    )
                    if (
                        coded
                        and prop.get("type") != "object"
                        and f"{field}_name" not in props
                        and (model_name, field) not in NO_LABEL_NEEDED
                    ):
                        missing.add(f"{model_name}.{field}")
    assert missing == set()


def test_every_nested_type_is_described_on_the_page_that_uses_it() -> None:
    for name in function_names():
        page = (REFERENCE / f"{name}.md").read_text(encoding="utf-8")
        for def_name in re.findall(r"\(#type-([a-z0-9]+)\)", page):
            assert f'<a id="type-{def_name}"></a>' in page, (name, def_name)
    bills_page = (REFERENCE / "bills.md").read_text(encoding="utf-8")
    for described in ("### Bill\n", "### HouseDues\n", "### HouseOwed\n"):
        assert described in bills_page


def test_every_error_detail_shape_is_documented() -> None:
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for key in DETAILS:
        assert f"| `{key}` |" in readme


LAYER = Path(__file__).resolve().parents[2] / "layers" / "common" / "caiyun"


def test_every_page_the_layer_links_to_is_a_documented_deep_link() -> None:
    written = set()
    for source in LAYER.rglob("*.py"):
        if source.name == "deeplinks.py":
            continue
        written |= set(re.findall(r"/pages/[a-z_]+/[a-z_]+", source.read_text(encoding="utf-8")))
    documented = {link.path for link in DEEP_LINKS}
    assert written == documented
    readme = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for path in documented:
        assert f"| `{path}` |" in readme


def test_the_codes_the_domain_writes_are_the_codes_the_contract_declares() -> None:
    kinds = tuple(labels.LABELS["message_kind"])
    assert get_args(labels.MessageKind) == get_args(notify.MessageKind) == kinds
    assert get_args(appconfig.AgreementCode) == get_args(login.AgreementCode)
    assert get_args(appconfig.AgreementCode) == tuple(labels.LABELS["agreement"])
    assert get_args(appconfig.Trigger) == get_args(login.AgreementTrigger)
    assert get_args(appconfig.Trigger) == tuple(labels.LABELS["agreement_trigger"])
