"""The API reference, generated from every function's action table and models.

``caiyun docs`` writes ``docs/api/``: one Markdown page per function (who may call each action,
its request and reply fields, the error codes it can return) and ``schema.json`` with the JSON
Schema of every request and reply. A test fails when the checked-in copy is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from caiyun.errors import ERROR_CODES
from caiyun.runtime.actions import Action, CloudFunction
from caiyun.sandbox.functions import function_names, handler

_ALWAYS = ("INVALID_ARGUMENT", "UNKNOWN_ACTION", "INTERNAL")


def _errors(action: Action) -> list[str]:
    codes = list(_ALWAYS)
    if action.allow.label != "anyone":
        codes.append("UNAUTHENTICATED")
    if action.allow.label.startswith("staff"):
        codes.append("FORBIDDEN")
    codes += [c for c in action.errors if c not in codes]
    return sorted(codes, key=lambda c: (ERROR_CODES[c][0], c))


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " \\| ".join(_type_of(s, defs) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    if schema.get("type") == "array":
        return f"list[{_type_of(schema.get('items', {}), defs)}]"
    return str(schema.get("type", "any"))


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        for option in [schema, *schema.get("anyOf", [])]:
            if key in option:
                value = f"`{option[key]}`" if key == "pattern" else option[key]
                parts.append(f"{label} {value}")
    return ", ".join(parts)


def _fields_table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    if not props:
        return ["(no fields)", ""]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | constraints |", "|---|---|---|---|"]
    for name, prop in props.items():
        lines.append(
            f"| `{name}` | {_type_of(prop, defs)} | {'yes' if name in required else 'no'} "
            f"| {_constraints(prop)} |"
        )
    return [*lines, ""]


def _summary(action: Action) -> str:
    doc = (action.request.__doc__ or "").strip()
    if doc and not doc.startswith(("A base", "Base of")) and "takes no fields" not in doc:
        return " ".join(doc.split())
    return ""


def function_page(name: str, function: CloudFunction) -> str:
    """The Markdown page of one function."""
    lines = [f"# `{name}`", ""]
    doc = _module_doc(name).strip()
    if doc:
        lines += [doc, ""]
    if function.http is not None:
        lines += ["Serves raw HTTP (see the contract's section 4); no JSON actions.", ""]
    if function.timer is not None:
        lines += ["Runs on its timer trigger; client calls are refused.", ""]
    if function.actions:
        lines += ["| action | who | errors |", "|---|---|---|"]
        for action_name, action in function.actions.items():
            errors = ", ".join(f"`{c}`" for c in _errors(action))
            lines.append(f"| [`{action_name}`](#{action_name}) | {action.allow.label} | {errors} |")
        lines.append("")
    for action_name, action in function.actions.items():
        lines += [f"## {action_name}", ""]
        summary = _summary(action)
        if summary:
            lines += [summary, ""]
        lines += [f"Who: **{action.allow.label}**", "", "Request:", ""]
        lines += _fields_table(action.request)
        if action.reply is not None:
            lines += [f"Reply `data` ({action.reply.__name__}):", ""]
            lines += _fields_table(action.reply)
        lines += ["Errors: " + ", ".join(f"`{c}`" for c in _errors(action)), ""]
    return "\n".join(lines).rstrip() + "\n"


def _module_doc(name: str) -> str:
    from caiyun.sandbox.functions import load_function

    return load_function(name).__doc__ or ""


def schema(functions: dict[str, CloudFunction]) -> dict[str, Any]:
    """JSON Schema of every action's request and reply."""
    return {
        name: {
            action_name: {
                "who": action.allow.label,
                "request": action.request.model_json_schema(),
                "reply": action.reply.model_json_schema() if action.reply else None,
                "errors": _errors(action),
            }
            for action_name, action in function.actions.items()
        }
        for name, function in functions.items()
    }


def render() -> dict[str, str]:
    """Every file of the reference, by path relative to ``docs/api``."""
    functions = {name: handler(name) for name in function_names()}
    files = {f"{name}.md": function_page(name, fn) for name, fn in functions.items()}
    index = [
        "# API reference",
        "",
        "Generated by `caiyun docs` from the action tables; do not edit by hand.",
        "Every reply is the contract's envelope; errors and HTTP statuses:",
        "",
        "| code | HTTP | message |",
        "|---|---|---|",
    ]
    index += [
        f"| `{code}` | {status} | {message} |" for code, (status, message) in ERROR_CODES.items()
    ]
    index += ["", "| function | actions |", "|---|---|"]
    index += [
        f"| [`{name}`]({name}.md) | {', '.join(f'`{a}`' for a in fn.actions) or '—'} |"
        for name, fn in functions.items()
    ]
    files["README.md"] = "\n".join(index) + "\n"
    files["schema.json"] = (
        json.dumps(schema(functions), ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    )
    return files


def write(target: Path) -> list[Path]:
    """Write the reference under ``target``; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for rel, text in render().items():
        path = target / rel
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
