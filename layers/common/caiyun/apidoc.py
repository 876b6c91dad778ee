"""The API reference, generated from every function's action table and models.

``caiyun docs`` writes ``docs/api/``: ``README.md`` (the conventions, every error code and
detail shape, every enumeration with its Chinese labels, the deep links messages carry), one
Markdown page per function (who may call each action, its request and reply fields, the error
codes it can return, and every nested type it uses) and ``schema.json`` with the JSON Schema of
every request and reply. A test fails when the checked-in copy is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caiyun import labels
from caiyun.deeplinks import DEEP_LINKS
from caiyun.errors import DETAILS, ERROR_CODES
from caiyun.runtime.dispatch import Action, CloudFunction
from caiyun.sandbox.functions import function_names, handler

_CONVENTIONS = """\
## Conventions

- Every reply is the envelope `{"ok": true, "data": {...}}` or `{"ok": false, "error": {"code",
  "message", "details"?}}`; `message` is Chinese, fit to show. Codes, HTTP statuses and the
  shapes `details` may take are below.
- Field names are snake_case; ids are strings; money is integer fen (`amount_fen`, `..._fen`);
  times are ISO 8601 with the +08:00 offset, business dates `YYYY-MM-DD` in Asia/Shanghai.
- **Codes and labels.** A reply field holding a code (`status`, `role`, `kind`, `category`...)
  has a sibling `<field>_name` with its Chinese label, ready to show. An option list (repair
  categories, complaint types, the labels in `login.config`) is a list of `{code, name}`. Every
  enumeration and its labels is listed below; repair categories and complaint types are set by
  the property company (`admin.update_config`), so read them from `login.config` (or
  `repair.categories`, `complaint.types`), never from this page.
- **Lists** take `page` (from 1) and `page_size` (default 20, at most 100) and reply
  `{items, total, page, page_size}`; lists shown as tabs also reply `counts` (how many there
  are per status, every status present, under the same scope and filters) so every tab can show
  its number from one call.
- **Creates** take an optional `request_id` (a client UUID): sending it again gets the first
  result, and nothing is created twice.
- **Images** are uploaded first (`upload_url` says where) and named by their file id. A reply
  shows each stored image as `{file_id, url}`: `url` is short-lived (an hour by default), for an
  `<image>` to show now, and may be null when it cannot be signed at the moment.
- **Phones** of other people are masked (`138****0000`) except where the caller needs them for
  the job: an admin sees the phones of owners in their communities; people working on a repair
  see each other's; a resident sees the visitors they registered.
"""

_ALWAYS = ("INVALID_ARGUMENT", "UNKNOWN_ACTION", "INTERNAL")


def documented_errors(action: Action) -> list[str]:
    """The error codes the API reference lists for ``action``: those any action may answer,
    those its caller policy implies, and the ones the action declares."""
    codes = list(_ALWAYS)
    if action.allow.label != "anyone":
        codes.append("UNAUTHENTICATED")
    if action.allow.label.startswith("staff"):
        codes.append("FORBIDDEN")
    codes += [c for c in action.errors if c not in codes]
    return sorted(codes, key=lambda c: (ERROR_CODES[c][0], c))


def enum_kind(values: list[Any]) -> str | None:
    """The enumeration of :mod:`caiyun.labels` a literal's values belong to: the smallest one
    holding them all (None when none does, or two do equally)."""
    # Numeric codes (ICBC's occupations) are listed by their decimal form.
    wanted = {str(v) for v in values}
    holding = sorted(
        (len(codes), kind) for kind, codes in labels.LABELS.items() if wanted <= set(codes)
    )
    if not holding or (len(holding) > 1 and holding[0][0] == holding[1][0]):
        return None
    return holding[0][1]


def _enum(values: list[Any]) -> str:
    shown = " \\| ".join(f"`{v}`" for v in values)
    kind = enum_kind(values)
    return shown if kind is None else f"{shown} ([{kind}](README.md#enum-{kind}))"


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#type-{name.lower()})"
    if "anyOf" in schema:
        return " \\| ".join(_type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return _enum(schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    if schema.get("type") == "array":
        return f"list[{_type_of(schema.get('items', {}))}]"
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        keys = _type_of(schema.get("propertyNames", {"type": "string"}))
        return f"dict[{keys}, {_type_of(schema['additionalProperties'])}]"
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


def _fields_table(schema: dict[str, Any]) -> list[str]:
    props = schema.get("properties", {})
    if not props:
        return ["(no fields)", ""]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | constraints |", "|---|---|---|---|"]
    for name, prop in props.items():
        lines.append(
            f"| `{name}` | {_type_of(prop)} | {'yes' if name in required else 'no'} "
            f"| {_constraints(prop)} |"
        )
    return [*lines, ""]


def _prose(text: str | None) -> str:
    return " ".join((text or "").split())


def _types_of(function: CloudFunction) -> dict[str, dict[str, Any]]:
    """Every nested type the function's requests and replies use, by name."""
    found: dict[str, dict[str, Any]] = {}
    for action in function.actions.values():
        for model in (action.request, action.reply):
            if model is None:
                continue
            for name, schema in model.model_json_schema().get("$defs", {}).items():
                if found.setdefault(name, schema) != schema:
                    raise ValueError(f"two different types are both named {name}")
    return dict(sorted(found.items()))


def _types_section(types: dict[str, dict[str, Any]]) -> list[str]:
    if not types:
        return []
    lines = ["## Types", ""]
    for name, schema in types.items():
        lines += [f'<a id="type-{name.lower()}"></a>', "", f"### {name}", ""]
        doc = _prose(schema.get("description"))
        if doc:
            lines += [doc, ""]
        lines += _fields_table(schema)
    return lines


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
            errors = ", ".join(f"`{c}`" for c in documented_errors(action))
            lines.append(f"| [`{action_name}`](#{action_name}) | {action.allow.label} | {errors} |")
        lines.append("")
    for action_name, action in function.actions.items():
        lines += [f"## {action_name}", ""]
        summary = _summary(action)
        if summary:
            lines += [summary, ""]
        lines += [f"Who: **{action.allow.label}**", "", "Request:", ""]
        lines += _fields_table(action.request.model_json_schema())
        if action.reply is not None:
            lines += [f"Reply `data` ({action.reply.__name__}):", ""]
            doc = _prose(action.reply.__doc__)
            if doc and not doc.startswith("Base of"):
                lines += [doc, ""]
            lines += _fields_table(action.reply.model_json_schema())
        lines += ["Errors: " + ", ".join(f"`{c}`" for c in documented_errors(action)), ""]
    lines += _types_section(_types_of(function))
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
                "errors": documented_errors(action),
            }
            for action_name, action in function.actions.items()
        }
        for name, function in functions.items()
    }


def _enumerations() -> list[str]:
    lines = [
        "## Enumerations",
        "",
        "Every code the API sends or takes, with the label its `<field>_name` carries.",
        "",
    ]
    for kind, codes in labels.LABELS.items():
        lines += [f'<a id="enum-{kind}"></a>', "", f"### {kind}", ""]
        if kind in labels.NOTES:
            lines += [labels.NOTES[kind], ""]
        if kind in labels.CONFIGURABLE:
            lines += [
                "The defaults: the property company may change this list "
                "(`admin.update_config`); the apps read the one in force from `login.config`.",
                "",
            ]
        lines += ["| code | label |", "|---|---|"]
        lines += [f"| `{code}` | {label} |" for code, label in codes.items()]
        lines.append("")
    return lines


def _details() -> list[str]:
    lines = [
        "## Error details",
        "",
        "`error.details` is present only when it says something, and holds only these keys:",
        "",
        "| key | shape | when, and what it means |",
        "|---|---|---|",
    ]
    lines += [f"| `{key}` | {shape} | {meaning} |" for key, (shape, meaning) in DETAILS.items()]
    return [*lines, ""]


def _deep_links() -> list[str]:
    lines = [
        "## Deep links",
        "",
        "Inbox messages carry `page` (and a WeChat subscription message opens it): one of these "
        "pages, with its query. Both apps must have the pages listed for them at these paths.",
        "",
        "| page | query | apps | shows |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{link.path}` | {f'`{link.query}`' if link.query else '—'} "
        f"| {', '.join(link.apps)} | {link.shows} |"
        for link in DEEP_LINKS
    ]
    return [*lines, ""]


def render() -> dict[str, str]:
    """Every file of the reference, by path relative to ``docs/api``."""
    functions = {name: handler(name) for name in function_names()}
    files = {f"{name}.md": function_page(name, fn) for name, fn in functions.items()}
    index = [
        "# API reference",
        "",
        "Generated by `caiyun docs` from the action tables; do not edit by hand.",
        "",
        "| function | actions |",
        "|---|---|",
    ]
    index += [
        f"| [`{name}`]({name}.md) | {', '.join(f'`{a}`' for a in fn.actions) or '—'} |"
        for name, fn in functions.items()
    ]
    index += ["", _CONVENTIONS, "## Error codes", "", "| code | HTTP | message |", "|---|---|---|"]
    index += [
        f"| `{code}` | {status} | {message} |" for code, (status, message) in ERROR_CODES.items()
    ]
    index += ["", *_details(), *_enumerations(), *_deep_links()]
    files["README.md"] = "\n".join(index).rstrip() + "\n"
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
