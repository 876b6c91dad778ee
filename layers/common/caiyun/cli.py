"""The ``caiyun`` command line: the local sandbox and the operator's tools.

Every command works on a sandbox data directory. Errors are printed as one Chinese/English line
and end with a non-zero exit status, never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caiyun.clock import SHANGHAI
from caiyun.stores import communities as community_store

if TYPE_CHECKING:
    from caiyun.domain.import_jobs import ImportKind

DEFAULT_DATA_DIR = ".caiyun/data"
_PHONE = re.compile(r"1[3-9][0-9]{9}")


class CliError(Exception):
    """A refusal shown to the operator as is (Chinese / English)."""


Command = Callable[[argparse.Namespace], int]


# caiyun dev


def _dev(args: argparse.Namespace) -> int:
    from caiyun.sandbox.server import create_server

    server = create_server(
        args.host, args.port, args.data_dir, seed=not args.no_seed, clock_start=args.clock_start
    )
    print(_banner(server.url, str(server.sandbox.data_dir), not args.no_seed, server.seeded))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\n沙箱已停止 / sandbox stopped")
    finally:
        server.shutdown()
    return 0


def _banner(url: str, data_dir: str, demo: bool, seeded: bool) -> str:
    from caiyun.sandbox.functions import function_names

    lines = [
        f"彩云居家沙箱 / Caiyun sandbox: {url}",
        f"  物业后台 / console: {url}/console/ (demo admins: 13900000001, 13900000002)",
        f"  数据目录 / data dir: {data_dir}",
        f"  云函数 / functions: {', '.join(function_names())}",
    ]
    if demo:
        lines += _demo_lines(seeded)
    lines += [
        "",
        "路由 / routes:",
        "  POST /invoke/<function>        body = event; header X-WX-OpenID (and X-WX-AppID)",
        "  POST /api/<function>           JSON body; header Authorization: Bearer <token>",
        "  POST /icbc/notify              the ICBC notify trigger",
        "  POST /timer/<function>         fire that function's timer now",
        "  GET  /dev/sms?phone=P          the SMS outbox of a phone, newest first",
        '  POST /dev/clock                {"advance_seconds": N}',
        '  POST /dev/icbc/complete        {"order_no": ..., "result": "success" | "fail"}',
        "",
        "Ctrl-C 停止 / to stop",
    ]
    return "\n".join(lines)


def _demo_lines(seeded: bool) -> list[str]:
    from caiyun.sandbox.seed import DEMO_COMMUNITIES, DEMO_STAFF

    state = "已写入 / seeded now" if seeded else "已存在则保留 / kept as found"
    lines = ["", f"演示账号 / demo logins ({state}; codes at /dev/sms):"]
    for community in DEMO_COMMUNITIES:
        for house in community.houses:
            lines.append(
                f"  业主 owner      {house.owner_phone}  {house.owner_name}  "
                f"{community.name} {house.label}"
            )
    for member in DEMO_STAFF:
        scope = "全部小区 / all" if member.communities is None else "、".join(member.communities)
        lines.append(f"  员工 {member.role:<10} {member.phone}  {member.name}  {scope}")
    return lines


def _add_dev(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dev", help="本地沙箱 / serve every function on localhost")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--no-seed", action="store_true", help="不写入演示数据 / skip the demo data set"
    )
    parser.add_argument(
        "--clock-start",
        type=_moment,
        help="新数据目录的沙箱时钟从此刻开始 / start a new data directory's clock at this "
        "ISO 8601 moment (e.g. 2026-11-25T10:00+08:00), then run at the real pace",
    )
    parser.set_defaults(run=_dev)


def _moment(text: str) -> datetime:
    """An ISO 8601 moment with an offset (a naive one is read as Asia/Shanghai)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"不是 ISO 8601 时刻 / not an ISO 8601 moment: {text}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=SHANGHAI)


# caiyun admin add-staff


def _add_staff(args: argparse.Namespace) -> int:
    from caiyun.sandbox.server import open_sandbox
    from caiyun.stores import accounts, staff

    if not _PHONE.fullmatch(args.phone):
        raise CliError(f"手机号格式不正确 / not a mainland mobile number: {args.phone}")
    name = args.name.strip()
    if not name or len(name) > 32:
        raise CliError("姓名须为 1–32 个字符 / the name must be 1–32 characters")
    if args.role != "admin" and not args.community:
        raise CliError("维修员和门岗须指定 --community / --community is required for this role")
    with open_sandbox(args.data_dir) as sandbox:
        db, now = sandbox.services.db, sandbox.services.clock.now()
        scope = None
        if args.community:
            scope = [_community_id(db, ref) for ref in args.community]
        account, created = accounts.ensure_account(db, args.phone, now, name)
        staff.upsert(db, account["_id"], name, args.role, scope, now)
    where = "全部小区 / every community" if scope is None else ", ".join(scope)
    fresh = "新账号 / new account" if created else "已有账号 / existing account"
    print(f"已添加工作人员 / staff added: {name} {args.phone} {args.role} → {where}")
    print(f"  account_id: {account['_id']} ({fresh})")
    return 0


def _community_id(db: Any, ref: str) -> str:

    found = community_store.by_id_or_name(db, ref)
    if found is None:
        raise CliError(
            f"找不到小区“{ref}”（或有同名小区，请用小区 id）/ "
            f"no community with id or unique name {ref!r}"
        )
    return found["_id"]


def _add_admin(commands: argparse._SubParsersAction) -> None:
    from caiyun.stores.staff import STAFF_ROLES

    parser = commands.add_parser("admin", help="运营工具 / operator tools")
    actions = parser.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add-staff",
        help="添加物业工作人员 / make someone staff",
        description="无 --community 的管理员覆盖全部小区 / an admin without --community "
        "covers every community, including ones imported later.",
    )
    add.add_argument("--phone", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=STAFF_ROLES)
    add.add_argument(
        "--community",
        nargs="+",
        metavar="ID_OR_NAME",
        help="小区 id 或名称 / community id or exact name",
    )
    add.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    add.set_defaults(run=_add_staff)


# caiyun invoke


def _invoke(args: argparse.Namespace) -> int:
    from caiyun.sandbox.functions import function_names, handler
    from caiyun.sandbox.server import SANDBOX_APPID, SANDBOX_STAFF_APPID, open_sandbox
    from caiyun.services import install_services

    if args.function not in function_names():
        raise CliError(f"云函数不存在 / no such function: {args.function}")
    try:
        event = json.loads(args.event)
    except ValueError:
        raise CliError("--event 不是有效的 JSON / --event is not valid JSON") from None
    if not isinstance(event, dict):
        raise CliError("--event 必须是 JSON 对象 / --event must be a JSON object")
    # As on /invoke, only the caller's openid (here --openid, in the mini-program --app) plays
    # the platform's userInfo.
    event.pop("userInfo", None)
    if args.openid:
        appid = SANDBOX_STAFF_APPID if args.app == "staff" else SANDBOX_APPID
        event["userInfo"] = {"openId": args.openid, "appId": appid}
    _function_logs_to_stderr()
    with open_sandbox(args.data_dir) as sandbox:
        install_services(sandbox.services)
        try:
            context = {"request_id": uuid.uuid4().hex, "function_name": args.function}
            reply = handler(args.function)(event, context)
        finally:
            install_services(None)
    print(json.dumps(reply, ensure_ascii=False, indent=2))
    return 1 if isinstance(reply, dict) and reply.get("ok") is False else 0


def _function_logs_to_stderr() -> None:
    # stdout carries only the envelope, so it can be piped (jq); the call's log line goes aside.
    logger = logging.getLogger("caiyun")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _add_invoke(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("invoke", help="调用一个云函数 / call one function in-process")
    parser.add_argument("function")
    parser.add_argument("--event", required=True, help='JSON, e.g. {"action": "me"}')
    parser.add_argument("--openid", help="调用者的 openid / the caller's WeChat openid")
    parser.add_argument(
        "--app",
        choices=("resident", "staff"),
        default="resident",
        help="调用者所在的小程序 / the caller's mini-program (its openid is that app's)",
    )
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.set_defaults(run=_invoke)


# caiyun import owners|bills FILE


def _run_import_job(args: argparse.Namespace, kind: ImportKind, **target: Any) -> int:
    """The same import job the console runs (admin.start_import, run_import): the file is put
    in the sandbox's storage, then imported a chunk at a time, with progress on stderr."""
    from caiyun.adapters.storage import SandboxStorage
    from caiyun.domain import import_jobs
    from caiyun.sandbox.server import open_sandbox

    path = Path(args.file)
    label = "导入业主 / owners" if kind == "owners" else "导入账单 / bills"
    with open_sandbox(args.data_dir) as sandbox:
        services = sandbox.services
        if "community_id" in target:
            target["community_id"] = _community_id(services.db, target["community_id"])
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


_MAX_ERRORS_SHOWN = 50


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


def _add_import(commands: argparse._SubParsersAction) -> None:
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


# caiyun docs


def _docs(args: argparse.Namespace) -> int:
    from caiyun import apidoc

    for path in apidoc.write(Path(args.out)):
        print(path)
    return 0


def _add_docs(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("docs", help="生成 API 参考 / write the API reference")
    parser.add_argument("--out", default="docs/api")
    parser.set_defaults(run=_docs)


# caiyun build


def _build(args: argparse.Namespace) -> int:
    from caiyun import packaging

    platforms = args.platform or [packaging.DEFAULT_PLATFORM]
    try:
        built = packaging.build(
            Path(args.out),
            python_version=args.python_version,
            platforms=platforms,
            wheels=not args.no_wheels,
        )
    except packaging.PackagingError as exc:
        raise CliError(str(exc)) from None
    for package in built:
        print(f"{package.path}  {_size(package.size)}  ({package.files} files)")
    console = packaging.build_console(Path(args.out))
    print(f"{console}/  物业后台静态文件 / the console's static files (docs/deploy.md)")
    if args.no_wheels:
        print(
            "注意：--no-wheels 的层只含本项目代码 / note: with --no-wheels the layer holds only "
            "our code; the functions also need the dependencies (see docs/deploy.md)"
        )
    return 0


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _add_build(commands: argparse._SubParsersAction) -> None:
    from caiyun.packaging import DEFAULT_PLATFORM, DEFAULT_PYTHON_VERSION

    parser = commands.add_parser(
        "build",
        help="打包层与云函数 / build layer.zip and one zip per function",
        description="层解压到 /opt（SCF 的 PYTHONPATH=/var/user:/opt），"
        "caiyun/ 与依赖位于 zip 根目录 / the layer unpacks to /opt, so caiyun/ and the "
        "dependencies sit at the zip's root.",
    )
    parser.add_argument("--out", default="build", help="输出目录 / output directory")
    parser.add_argument(
        "--python-version",
        default=DEFAULT_PYTHON_VERSION,
        help="SCF 运行时的 Python 版本 / the SCF runtime's Python (wheels are chosen for it)",
    )
    parser.add_argument(
        "--platform",
        action="append",
        metavar="TAG",
        help=f"wheel 平台标签，可重复 / wheel platform tag, repeatable ({DEFAULT_PLATFORM})",
    )
    parser.add_argument(
        "--no-wheels",
        action="store_true",
        help="不安装依赖（无需网络）/ skip the dependencies (no network needed)",
    )
    parser.set_defaults(run=_build)


# caiyun db ensure-indexes | add-admin


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
        from caiyun.sandbox.server import warn_clashes

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
    from caiyun.data.embedded import EmbeddedDatabase

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

    if not _PHONE.fullmatch(args.phone):
        raise CliError(f"手机号格式不正确 / not a mainland mobile number: {args.phone}")
    name = args.name.strip()
    if not name or len(name) > 32:
        raise CliError("姓名须为 1–32 个字符 / the name must be 1–32 characters")
    db, where = _open_database(args.data_dir)
    try:
        if args.data_dir is None:
            _require_account_indexes(db)
            now = SystemClock().now()
        else:
            from caiyun.sandbox.server import load_clock

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


def _add_db(commands: argparse._SubParsersAction) -> None:
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


# caiyun selfcheck


def _selfcheck(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile

    from caiyun import selfcheck
    from caiyun.sandbox.server import open_sandbox
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


def _add_selfcheck(commands: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(run=_selfcheck)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_dev,
    _add_admin,
    _add_invoke,
    _add_import,
    _add_docs,
    _add_build,
    _add_db,
    _add_selfcheck,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="caiyun", description="彩云居家 / Caiyun Home back end")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    run: Command = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"错误 / error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: Exception) -> str:
    from caiyun.errors import AppError
    from caiyun.sandbox.server import SandboxError

    if isinstance(exc, CliError | SandboxError):
        return str(exc)
    if isinstance(exc, AppError):
        return f"{exc.message} ({exc.code})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} / {type(exc).__name__}"
    # Unexpected: name it so it can be reported, without a traceback or personal data.
    from caiyun.logs import redact

    return f"内部错误 / internal error: {type(exc).__name__}: {redact(str(exc))}"


if __name__ == "__main__":
    sys.exit(main())
