"""``caiyun import owners|bills FILE``: the console's import job, run from a file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caiyun.cli.common import DEFAULT_DATA_DIR, community_id

if TYPE_CHECKING:
    from caiyun.domain.import_jobs import ImportKind

_MAX_ERRORS_SHOWN = 50


def _run_import_job(args: argparse.Namespace, kind: ImportKind, **target: Any) -> int:
    """The same import job the console runs (admin.start_import, run_import): the file is put
    in the sandbox's storage, then imported a chunk at a time, with progress on stderr."""
    from caiyun.adapters.storage import SandboxStorage
    from caiyun.domain import import_jobs
    from caiyun.sandbox.environment import open_sandbox

    path = Path(args.file)
    label = "导入业主 / owners" if kind == "owners" else "导入账单 / bills"
    with open_sandbox(args.data_dir) as sandbox:
        services = sandbox.services
        if "community_id" in target:
            target["community_id"] = community_id(services.db, target["community_id"])
        storage = services.storage
        assert isinstance(storage, SandboxStorage)
        file_id = import_jobs.upload_target(services, "cli", path.name).file_id
        assert file_id is not None
        storage.put(file_id, path.read_bytes())
        job = import_jobs.start(services, None, kind, file_id, filename=path.name, **target)
        started = time.monotonic()
        while job["status"] == "running":
            job = import_jobs.run_chunk(services, None, job["_id"])
            rate = job["rows_done"] / max(time.monotonic() - started, 1e-6)
            print(
                f"\r{label}：{job['rows_done']}/{job['total_rows']} 行（{rate:.0f} 行/秒）",
                end="",
                file=sys.stderr,
                flush=True,
            )
        print(file=sys.stderr)
        failed, total = import_jobs.failed_rows(services, job, 0, _MAX_ERRORS_SHOWN)
    counts = job["counts"]
    if kind == "owners":
        print(f"小区 / community: {target['community']['name']} ({job['community_id']})")
    print(
        f"新增 {counts['created']}，更新 {counts['updated']}，未变 {counts['unchanged']}，"
        f"错误 {counts['error']} / created, updated, unchanged, errors"
    )
    for row in failed:
        print(f"  第 {row['line']} 行 / line: {row['reason']}")
    if total > len(failed):
        print(f"  …… 另有 {total - len(failed)} 行错误 / more errors")
    return 1 if total else 0


def _import_owners(args: argparse.Namespace) -> int:
    community = {
        "province": args.province,
        "city": args.city,
        "district": args.district,
        "name": args.name,
        "address": args.address,
    }
    return _run_import_job(args, "owners", community=community)


def _import_bills(args: argparse.Namespace) -> int:
    return _run_import_job(args, "bills", community_id=args.community)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun import owners | bills``."""
    parser = commands.add_parser(
        "import", help="从 Excel/CSV 导入业主或账单 / import owners or bills from .xlsx/.csv"
    )
    kinds = parser.add_subparsers(dest="import_kind", required=True, metavar="KIND")
    owners = kinds.add_parser("owners", help="业主与房屋 / houses and their owners")
    owners.add_argument("file")
    for region in ("province", "city", "district", "name"):
        owners.add_argument(f"--{region}", required=True)
    owners.add_argument("--address", default="")
    owners.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    owners.set_defaults(run=_import_owners)
    bills = kinds.add_parser("bills", help="账单 / bills of one community")
    bills.add_argument("file")
    bills.add_argument("--community", required=True, metavar="ID_OR_NAME")
    bills.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    bills.set_defaults(run=_import_bills)
