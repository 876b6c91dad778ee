"""``caiyun db ensure-indexes | add-admin | remove-duplicate``: the production database's tools
(MONGODB_URI), or a sandbox data directory's (``--data-dir``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from caiyun.cli.common import CliError, staff_name


def _open_database(data_dir: str | None) -> tuple[Any, str]:
    """The database an operator command works on, and a description of it for the output.

    ``--data-dir`` selects a sandbox's embedded database; otherwise MONGODB_URI (read through
    the settings, like a function does) must be set. Nothing falls back silently to an
    embedded database, so a missing variable can never make a production command touch a
    local file instead.
    """
    from caiyun.catalog import open_database
    from caiyun.settings import Settings

    if data_dir is not None:
        path = Path(data_dir)
        if path.exists() and not path.is_dir():
            raise CliError(f"--data-dir 不是目录 / --data-dir is not a directory: {data_dir}")
        settings = Settings(env="sandbox", mongodb_uri=None, data_dir=str(path.resolve()))
        from caiyun.sandbox.environment import warn_clashes

        db = open_database(settings)
        warn_clashes(db)
        return db, f"嵌入式数据库 / embedded database in {path.resolve()}"
    settings = Settings(env="sandbox")
    if settings.mongodb_uri is None or not settings.mongodb_uri.get_secret_value():
        raise CliError(
            "未设置 MONGODB_URI；沙箱数据请用 --data-dir DIR / "
            "MONGODB_URI is not set (use --data-dir DIR for a sandbox data directory)"
        )
    return open_database(settings), f"MongoDB, database {settings.db_name}"


def _remove_duplicate(args: argparse.Namespace) -> int:
    db, where = _open_database(args.data_dir)
    try:
        groups = [c for c in db.engine.clashes if c.collection == args.collection]
        group = next((c for c in groups if args.id in c.ids), None)
        if group is None:
            raise CliError(
                f"{args.collection} 中的 {args.id} 不在任何唯一索引冲突中 / "
                f"{args.id} of {args.collection} breaks no unique index: nothing removed"
            )
        db[args.collection].delete_one({"_id": args.id})
        kept = ", ".join(str(key) for key in group.ids if key != args.id)
        print(f"已删除 / removed {args.collection} {args.id}; 保留 / kept: {kept}")
        print(f"  {where}")
    finally:
        _close_database(db)
    return 0


def _close_database(db: Any) -> None:
    from caiyun.data.embedded_handles import EmbeddedDatabase

    if isinstance(db, EmbeddedDatabase):
        db.engine.close()
    else:
        db.client.close()


def _database_failure(exc: Exception) -> CliError:
    # pymongo's messages name hosts, never the password; redact() masks anything else.
    from caiyun.logs import redact

    first_line = str(exc).splitlines()[0] if str(exc) else ""
    # A server-selection timeout goes on to list its timeouts and topology: keep the cause.
    first_line = first_line.split(" (configured timeouts", 1)[0]
    return CliError(
        f"数据库操作失败 / the database refused or is unreachable: "
        f"{type(exc).__name__}: {redact(first_line)[:300]}"
    )


def _ensure_indexes(args: argparse.Namespace) -> int:
    from pymongo.errors import PyMongoError

    from caiyun.catalog import ensure_indexes

    db, where = _open_database(args.data_dir)
    try:
        ensured = ensure_indexes(db)
        print(f"索引已就绪 / indexes in place: {where}")
        for collection in sorted(ensured):
            print(f"{collection}")
            for name, spec in sorted(db[collection].index_information().items()):
                keys = ", ".join(f"{field} {direction}" for field, direction in spec["key"])
                flags = " unique" if spec.get("unique") else ""
                if "expireAfterSeconds" in spec:
                    flags += f" ttl={spec['expireAfterSeconds']}s"
                print(f"  {name}: {keys}{flags}")
    except PyMongoError as exc:
        raise _database_failure(exc) from None
    finally:
        _close_database(db)
    return 0


def _add_admin_account(args: argparse.Namespace) -> int:
    from pymongo.errors import PyMongoError

    from caiyun.clock import SystemClock
    from caiyun.stores import accounts, staff

    name = staff_name(args.phone, args.name)
    db, where = _open_database(args.data_dir)
    try:
        if args.data_dir is None:
            _require_account_indexes(db)
            now = SystemClock().now()
        else:
            from caiyun.sandbox.environment import load_clock

            now = load_clock(args.data_dir).now()
        account, created = accounts.ensure_account(db, args.phone, now, name)
        staff.upsert(db, account["_id"], name, "admin", None, now)
    except PyMongoError as exc:
        raise _database_failure(exc) from None
    finally:
        _close_database(db)
    fresh = "新账号 / new account" if created else "已有账号 / existing account"
    print(f"已添加管理员 / admin added: {name} {args.phone} → 全部小区 / every community")
    print(f"  account_id: {account['_id']} ({fresh})")
    print(f"  {where}")
    return 0


def _require_account_indexes(db: Any) -> None:
    """Refuse to write accounts into a MongoDB whose unique phone index is missing."""
    from caiyun.stores.accounts import ACCOUNTS

    for spec in db[ACCOUNTS].index_information().values():
        if spec.get("unique") and [field for field, _ in spec["key"]] == ["phone"]:
            return
    raise CliError(
        "accounts 集合缺少手机号唯一索引，请先运行 caiyun db ensure-indexes / "
        "the accounts collection has no unique phone index yet: run caiyun db ensure-indexes first"
    )


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun db ensure-indexes | add-admin | remove-duplicate``."""
    parser = commands.add_parser(
        "db",
        help="生产数据库工具 / database tools (MONGODB_URI, or --data-dir for a sandbox)",
    )
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    ensure = actions.add_parser(
        "ensure-indexes",
        help="创建全部索引（可重复运行）/ create every declared index (idempotent)",
    )
    ensure.add_argument(
        "--data-dir", help="沙箱数据目录（代替 MONGODB_URI）/ a sandbox data dir instead"
    )
    ensure.set_defaults(run=_ensure_indexes)
    admin = actions.add_parser(
        "add-admin",
        help="添加覆盖全部小区的管理员 / make someone an admin of every community",
        description="首个管理员的引导：直接写入 MONGODB_URI 指向的数据库 / bootstraps the first "
        "admin straight into the database MONGODB_URI names (or --data-dir's sandbox).",
    )
    admin.add_argument("--phone", required=True)
    admin.add_argument("--name", required=True)
    admin.add_argument(
        "--data-dir", help="沙箱数据目录（代替 MONGODB_URI）/ a sandbox data dir instead"
    )
    admin.set_defaults(run=_add_admin_account)
    remove = actions.add_parser(
        "remove-duplicate",
        help="删除违反唯一索引的多余记录 / remove a document that breaks a unique index",
        description="只删除启动时报告为违反唯一索引的记录 / removes only a document reported "
        "at start-up as breaking a unique index (embedded data directories only).",
    )
    remove.add_argument("--collection", required=True)
    remove.add_argument("--id", required=True)
    remove.add_argument("--data-dir", required=True, help="沙箱数据目录 / the sandbox data dir")
    remove.set_defaults(run=_remove_duplicate)
