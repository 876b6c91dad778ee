"""``caiyun invoke``: call one function in-process, as the platform would."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid

from caiyun.cli.common import DEFAULT_DATA_DIR, CliError


def _run(args: argparse.Namespace) -> int:
    from caiyun.sandbox.environment import SANDBOX_APPID, SANDBOX_STAFF_APPID, open_sandbox
    from caiyun.sandbox.functions import function_names, handler
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


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun invoke``."""
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
    parser.set_defaults(run=_run)
