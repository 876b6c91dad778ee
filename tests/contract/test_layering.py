"""The layer's imports point one way: down the table below, never back up, and never in a circle.

Read from the source (``ast``), so an import inside a function or under ``TYPE_CHECKING`` counts
as much as one at the top for the direction (a type-only arrow back is still a dependency back);
circles are those Python would run into, so type-only imports do not close one. See the README's
"How the code is laid out" for the picture.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from caiyun import catalog

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common" / "caiyun"

# Module (or package) -> rank. A module may import a module of a lower or equal rank, never a
# higher one; the longest matching name decides. Equal ranks may import each other (inside a
# package, say), as long as no circle forms.
RANKS: dict[str, int] = {
    "caiyun.cli": 90,  # the command line: starts everything below
    "caiyun.selfcheck": 80,  # `caiyun selfcheck`: journeys over the sandbox
    "caiyun.apidoc": 80,  # `caiyun docs`: reads the action tables
    "caiyun.sandbox": 70,  # `caiyun dev`, the fakes, the demo data
    "caiyun.runtime": 60,  # events, callers, the action dispatcher
    "caiyun.catalog": 50,  # every record's collection, collected above the records
    "caiyun.domain": 40,  # the business rules
    "caiyun.stores": 35,  # each record's collection: its fields, indexes, queries, guarded moves
    "caiyun.services": 30,  # the container of outside-world clients the domain is handed
    "caiyun.adapters": 20,  # SMS, WeChat, ICBC, storage clients
    "caiyun.data": 15,  # the database: connection, embedded engine, index declarations
    "caiyun.crypto": 13,  # tokens and keyed hashes, keyed by the settings
    "caiyun.settings": 12,
    # Adapters that read no settings, so that the settings can check ICBC keys and read the
    # SSM secret with them.
    "caiyun.adapters.icbc_protocol": 11,
    "caiyun.adapters.secrets": 11,
    "caiyun.contract": 10,  # the request and reply models (the domain may use their patterns)
    "caiyun.imports": 5,  # reading uploaded spreadsheets
    # Leaves: import nothing of ours but each other.
    "caiyun.errors": 0,
    "caiyun.clock": 0,
    "caiyun.labels": 0,
    "caiyun.logs": 0,
    "caiyun.validation": 0,
    "caiyun.ids": 0,
    "caiyun.money": 0,
    "caiyun.checksums": 0,
    "caiyun.deeplinks": 0,
    "caiyun.packaging": 0,
    "caiyun": 0,  # the package itself
}

# Commands load what one subcommand runs, when it runs: `caiyun --help` or `caiyun docs` must
# not start the sandbox or open a database. Their imports inside functions are by design.
COMMANDS = ("caiyun.cli", "caiyun.selfcheck", "caiyun.apidoc")

# Every other import of our own modules inside a function, and why it waits for the call.
LAZY: dict[tuple[str, str], str] = {
    ("caiyun.data.connect", "caiyun.data.embedded"): "mongomock: only off MongoDB",
    ("caiyun.services", "caiyun.adapters.icbc"): "adapters load at the first call, not import",
    ("caiyun.services", "caiyun.adapters.sms"): "adapters load at the first call, not import",
    ("caiyun.services", "caiyun.adapters.storage"): "adapters load at the first call, not import",
    ("caiyun.services", "caiyun.adapters.wechat"): "adapters load at the first call, not import",
    ("caiyun.services", "caiyun.settings"): "the Settings model is built at the first call",
}


@dataclass(frozen=True)
class Import:
    """One import statement of ours: who imports what, where, and whether inside a function."""

    importer: str
    imported: str
    line: int
    in_function: bool
    type_only: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(LAYER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(LAYER.rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = importer.split(".")[: None if is_package else -1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    # `from caiyun.domain import accounts` imports the module caiyun.domain.accounts.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports() -> list[Import]:
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(function)
        }
        type_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for node in ast.walk(block)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, name, path.name == "__init__.py"):
                    if target == "caiyun" or target.startswith("caiyun."):
                        found.append(
                            Import(
                                name, target, node.lineno, id(node) in inside, id(node) in type_only
                            )
                        )
    return found


IMPORTS = _imports()


def rank(module: str) -> int:
    """The rank of the longest entry of RANKS that is ``module`` or a package holding it."""
    owners = [key for key in RANKS if module == key or module.startswith(key + ".")]
    if not owners:
        raise AssertionError(f"{module} has no rank: add it to RANKS")
    return RANKS[max(owners, key=len)]


def test_every_module_of_the_layer_has_a_rank() -> None:
    assert [rank(name) for name in MODULES]


def test_no_import_points_from_a_lower_layer_to_a_higher_one() -> None:
    back = [
        f"{i.importer}:{i.line} imports {i.imported} ({rank(i.importer)} < {rank(i.imported)})"
        for i in IMPORTS
        if rank(i.importer) < rank(i.imported)
    ]
    assert back == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for i in IMPORTS:
        if i.imported in MODULES and i.imported != i.importer and not i.type_only:
            graph[i.importer].add(i.imported)
    # Every package imports its __init__ first; that is no arrow of ours.
    for name in MODULES:
        graph[name] -= {name.rsplit(".", 1)[0]}
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_our_modules_are_imported_inside_functions_only_where_a_cold_start_needs_it() -> None:
    late = sorted(
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in IMPORTS
        if i.in_function
        and not i.importer.startswith(COMMANDS)
        and (i.importer, i.imported) not in LAZY
    )
    assert late == []


def test_every_listed_lazy_import_still_exists() -> None:
    present = {(i.importer, i.imported) for i in IMPORTS if i.in_function}
    assert sorted(set(LAZY) - present) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_that_declares_a_collection_is_in_the_catalog(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    declares = any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "declare"
        for statement in tree.body
        for node in ast.walk(statement)
    )
    # The local ICBC's collections live in the sandbox's own database, not the deployment's.
    if declares and not module.startswith("caiyun.sandbox"):
        assert module in catalog.DECLARING_MODULES


# The rules of the records whose store owns their collection: they decide, the store queries.
RULES_OF_STORED_RECORDS = (
    "caiyun.domain.accounts",
    "caiyun.domain.autodebit",
    "caiyun.domain.autodebit_charges",
    "caiyun.domain.communities",
    "caiyun.domain.complaints",
    "caiyun.domain.houses",
    "caiyun.domain.memberships",
    "caiyun.domain.notices",
    "caiyun.domain.payments",
    "caiyun.domain.profiles",
    "caiyun.domain.repair_notes",
    "caiyun.domain.repair_views",
    "caiyun.domain.repairs",
    "caiyun.domain.sessions",
    "caiyun.domain.staff",
    "caiyun.domain.visitors",
)


def _touches_the_database(node: ast.AST) -> bool:
    # ``db[...]`` / ``services.db[...]``: a collection opened by name.
    if isinstance(node, ast.Subscript):
        value = node.value
        return (isinstance(value, ast.Name) and value.id == "db") or (
            isinstance(value, ast.Attribute) and value.attr == "db"
        )
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names]
        return any(name.split(".")[0] == "pymongo" for name in names)
    return False


@pytest.mark.parametrize("module", RULES_OF_STORED_RECORDS)
def test_the_rules_of_a_stored_record_never_query_its_collection_themselves(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = [ast.unparse(n)[:60] for n in ast.walk(tree) if _touches_the_database(n)]
    assert found == [], f"{module} opens a collection or imports pymongo: {found}"


def _store_collections() -> set[str]:
    # The names the stores declare their collections under (``BILLS = declare("bills", ...)``).
    names = set()
    for module, path in MODULES.items():
        if module.startswith("caiyun.stores."):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                value = getattr(node, "value", None)
                declares = isinstance(value, ast.Call) and ast.unparse(value.func) == "declare"
                if isinstance(node, ast.Assign) and declares:
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


STORE_COLLECTIONS = _store_collections()
# How the domain may read a store's collection itself: a read model joining several records
# (an aggregate with its ``$lookup``s, or a page of one through caiyun.data.paging).
JOINED_READS = {"aggregate", "paging.page", "paging.tabbed"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("caiyun.domain.")))
def test_the_domain_writes_and_queries_a_stores_collection_only_through_the_store(
    module: str,
) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (_touches_the_database(node) and isinstance(node, ast.Subscript)):
            continue
        if ast.unparse(node.slice).split(".")[-1] not in STORE_COLLECTIONS:
            continue
        parent = parents[node]
        if isinstance(parent, ast.Attribute):
            use = parent.attr
        elif isinstance(parent, ast.Call):
            use = ast.unparse(parent.func)
        else:
            use = type(parent).__name__
        if use not in JOINED_READS:
            found.append(f"line {node.lineno}: {ast.unparse(node)} used by {use}")
    assert found == [], f"{module} goes around a store: {found}"
