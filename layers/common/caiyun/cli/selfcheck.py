"""``caiyun selfcheck``: after a deploy, every function's read and write path once, in a
throwaway database."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from caiyun.cli.common import CliError


def _run(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    from caiyun import selfcheck
    from caiyun.sandbox.environment import open_sandbox
    from caiyun.settings import Settings

    live = {name for group in args.live or [] for name in group.split(",") if name}
    unknown = live - set(selfcheck.LIVE_SERVICES)
    if unknown:
        raise CliError(f"--live 只接受 sms,wechat,icbc / unknown service: {', '.join(unknown)}")
    with contextlib.ExitStack() as stack:
        if args.data_dir is not None:
            scratch = selfcheck.embedded_scratch(Path(args.data_dir).resolve())
            stack.callback(selfcheck.drop_embedded, scratch)
            where = f"嵌入式数据库 / embedded database in {scratch} (removed afterwards)"
            db = None
        else:
            uri = Settings(env="sandbox").mongodb_uri
            if uri is None or not uri.get_secret_value():
                raise CliError(
                    "未设置 MONGODB_URI；沙箱数据请用 --data-dir DIR / "
                    "MONGODB_URI is not set (use --data-dir DIR for the embedded engine)"
                )
            from pymongo import MongoClient

            name = selfcheck.throwaway_name()
            client: Any = MongoClient(
                uri.get_secret_value(), tz_aware=True, serverSelectionTimeoutMS=5000
            )
            stack.callback(client.close)
            stack.callback(client.drop_database, name)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caiyun-sc-")))
            db = client[name]
            where = f"MongoDB, throwaway database {name} (dropped afterwards)"

        def services_for(database: Any) -> Any:
            sandbox = open_sandbox(scratch, db=database)
            stack.callback(sandbox.close)
            return sandbox.services

        if db is None:
            sandbox = open_sandbox(scratch)
            stack.callback(sandbox.close)
            db = sandbox.services.db
            report = selfcheck.check_database(db, lambda _: sandbox.services, where)
        else:
            report = selfcheck.check_database(db, services_for, where)
        if live:
            from caiyun.services import build_services
            from caiyun.settings import get_settings

            selfcheck.live_checks(report, build_services(get_settings(), db=db), live, args.phone)
    print(report.table())
    return 0 if report.ok else 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun selfcheck``."""
    parser = commands.add_parser(
        "selfcheck",
        help="部署后自检 / after a deploy: every function's read and write path, once",
        description="在临时数据库中（用后删除）建索引并走一遍每个云函数 / in a throwaway database "
        "(dropped afterwards): ensure the indexes, then every function's journey once.",
    )
    parser.add_argument(
        "--data-dir", help="嵌入式数据库所在目录（代替 MONGODB_URI）/ the embedded engine instead"
    )
    parser.add_argument(
        "--live",
        action="append",
        metavar="sms,wechat,icbc",
        help="另外调用真实的外部服务 / also call these real services with the deploy's settings",
    )
    parser.add_argument("--phone", help="--live sms 的收信手机号 / the phone --live sms texts")
    parser.set_defaults(run=_run)
