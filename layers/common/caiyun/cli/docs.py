"""``caiyun docs``: write the API reference."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from caiyun import apidoc

    for path in apidoc.write(Path(args.out)):
        print(path)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun docs``."""
    parser = commands.add_parser("docs", help="生成 API 参考 / write the API reference")
    parser.add_argument("--out", default="docs/api")
    parser.set_defaults(run=_run)
