"""The ``caiyun`` command line: the local sandbox and the operator's tools, one module per
subcommand.

Every command works on a sandbox data directory or, for the database tools, the production
database. Errors are printed as one Chinese/English line and end with a non-zero exit status,
never with a traceback. Each subcommand loads what it runs when it runs: ``caiyun --help`` or
``caiyun docs`` never starts the sandbox or opens a database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from caiyun.cli import admin, build, db, dev, docs, import_files, invoke, selfcheck
from caiyun.cli.common import CliError, Command, Register

SUBCOMMANDS: tuple[Register, ...] = (
    dev.register,
    admin.register,
    invoke.register,
    import_files.register,
    docs.register,
    build.register,
    db.register,
    selfcheck.register,
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
    from caiyun.sandbox.environment import SandboxError

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
