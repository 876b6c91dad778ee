"""``caiyun build``: the layer and one zip per function, and the console's static files."""

from __future__ import annotations

import argparse
from pathlib import Path

from caiyun.cli.common import CliError


def _run(args: argparse.Namespace) -> int:
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


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``caiyun build``."""
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
    parser.set_defaults(run=_run)
