"""``caiyun dev``: every function served on localhost over the sandbox's fakes."""

from __future__ import annotations

import argparse
import sys

from caiyun.cli.common import DEFAULT_DATA_DIR, moment


def _run(args: argparse.Namespace) -> int:
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


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun dev``."""
    parser = commands.add_parser("dev", help="本地沙箱 / serve every function on localhost")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--no-seed", action="store_true", help="不写入演示数据 / skip the demo data set"
    )
    parser.add_argument(
        "--clock-start",
        type=moment,
        help="新数据目录的沙箱时钟从此刻开始 / start a new data directory's clock at this "
        "ISO 8601 moment (e.g. 2026-11-25T10:00+08:00), then run at the real pace",
    )
    parser.set_defaults(run=_run)
