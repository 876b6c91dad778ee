"""Building what a deploy uploads: the shared layer and one code package per cloud function.

Where things land on Tencent SCF: a layer unpacks to ``/opt``, a function's code to
``/var/user``, and Python runs with ``PYTHONPATH=/var/user:/opt``. So the layer zip holds
``caiyun/`` and the third-party packages at its root (not under ``python/``, the AWS Lambda and
Alibaba FC convention, which SCF does not put on the path), and a function zip holds
``index.py`` at its root, where the handler ``index.main_handler`` is looked up.

The layer carries what runs in the cloud and nothing else: the operator's tools (the sandbox
with its fake services and their credentials, the command line, the API reference writer and
this builder) stay out, and only source files are copied, never byte code, data or keys.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PYTHON_VERSION = "3.10"
DEFAULT_PLATFORM = "manylinux2014_x86_64"
LAYER_ZIP = "layer.zip"
FUNCTIONS_DIR = "functions"
CONSOLE_DIR = "console"

# Operator-only parts of the package and the console's static files; no cloud function imports
# them.
LAYER_EXCLUDED = ("sandbox", "cli", "apidoc.py", "packaging.py", "selfcheck", CONSOLE_DIR)
# Only these files are copied from our own code (an allowlist, so a stray key, database or
# .env file in the source tree can never reach a package).
_SOURCE_FILE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py|py\.typed")
_PYTHON_VERSION = re.compile(r"3\.[0-9]{1,2}")
# A fixed timestamp makes the zips byte-for-byte reproducible: unchanged code, unchanged hash.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class PackagingError(Exception):
    """The packages cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class Package:
    """One built zip."""

    path: Path
    size: int
    files: int


def project_root() -> Path:
    """The checkout this module belongs to (else the current directory), with ``functions/``."""
    candidates = [Path(__file__).resolve().parents[3], Path.cwd()]
    for candidate in candidates:
        if (candidate / "pyproject.toml").is_file() and (candidate / FUNCTIONS_DIR).is_dir():
            return candidate
    raise PackagingError(
        "找不到项目目录（需含 pyproject.toml 与 functions/）/ "
        "no project checkout with pyproject.toml and functions/ found; run from the repository"
    )


def runtime_requirements(pyproject: Path) -> list[str]:
    """The project's runtime dependencies (``[project] dependencies`` of pyproject.toml)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise PackagingError(
                "读取 pyproject.toml 需要 Python 3.11+ 或 tomli / "
                "reading pyproject.toml needs Python 3.11+ or the tomli package"
            ) from None
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    requirements = data.get("project", {}).get("dependencies", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise PackagingError(f"{pyproject}: [project] dependencies must be a list of strings")
    return list(requirements)


def function_names(root: Path) -> list[str]:
    """Every cloud function of the checkout: each ``functions/<name>/`` with an ``index.py``."""
    return sorted(p.parent.name for p in (root / FUNCTIONS_DIR).glob("*/index.py"))


def build(
    out: Path,
    *,
    root: Path | None = None,
    python_version: str = DEFAULT_PYTHON_VERSION,
    platforms: Sequence[str] = (DEFAULT_PLATFORM,),
    wheels: bool = True,
) -> list[Package]:
    """Write ``out/layer.zip`` and ``out/functions/<name>.zip``; returns them, layer first.

    With ``wheels`` the runtime dependencies are installed into the layer by pip as binary
    wheels for the SCF Python (``python_version`` on ``platforms``), never built from source
    on this machine; without it the layer holds only our code and nothing touches the network.
    """
    if not _PYTHON_VERSION.fullmatch(python_version):
        raise PackagingError(
            f"--python-version 应形如 3.10 / must look like 3.10: {python_version}"
        )
    root = root or project_root()
    names = function_names(root)
    if not names:
        raise PackagingError(f"{root / FUNCTIONS_DIR} 下没有云函数 / holds no function")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="caiyun-layer-") as staging:
        layer_dir = Path(staging)
        _copy_sources(root / "layers" / "common" / "caiyun", layer_dir / "caiyun", LAYER_EXCLUDED)
        if wheels:
            requirements = runtime_requirements(root / "pyproject.toml")
            install_wheels(layer_dir, requirements, python_version, platforms)
            _strip_installed(layer_dir)
        built = [_zip_tree(layer_dir, out / LAYER_ZIP)]
    functions_out = out / FUNCTIONS_DIR
    functions_out.mkdir(exist_ok=True)
    for name in names:
        files = _source_files(root / FUNCTIONS_DIR / name, ())
        built.append(_zip_files(files, functions_out / f"{name}.zip"))
    return built


def build_console(out: Path, *, root: Path | None = None) -> Path:
    """Copy the console's static files to ``out/console/`` for static hosting (COS static
    website, CloudBase static hosting); its ``config.json`` is then filled with the function
    URLs (docs/deploy.md). Returns that folder."""
    src = (root or project_root()) / "layers" / "common" / "caiyun" / CONSOLE_DIR
    dest = out / CONSOLE_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.suffix in (".html", ".css", ".js", ".json"):
            shutil.copyfile(path, dest / path.name)
    return dest


def install_wheels(
    target: Path, requirements: Sequence[str], python_version: str, platforms: Sequence[str]
) -> None:
    """``pip install --target`` the requirements as wheels for another Python and platform."""
    if not requirements:
        return
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "--no-compile",
        "--target",
        str(target),
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        *(f"--platform={platform}" for platform in platforms),
        *requirements,
    ]
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PackagingError(
            f"pip 未能安装 Python {python_version} / {', '.join(platforms)} 的依赖"
            f"（见上方 pip 输出）/ pip could not install the dependencies as wheels for that "
            f"Python and platform (see pip's output above): {exc}"
        ) from None


def _strip_installed(layer_dir: Path) -> None:
    # Console scripts and byte code are of no use in a layer (SCF never writes .pyc either).
    shutil.rmtree(layer_dir / "bin", ignore_errors=True)
    for cache in sorted(layer_dir.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for compiled in layer_dir.rglob("*.py[co]"):
        compiled.unlink()


def _copy_sources(src: Path, dest: Path, excluded: Iterable[str]) -> None:
    for path, relative in _source_files(src, tuple(excluded)):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _source_files(src: Path, excluded: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, path relative to ``src``) of every source file under ``src``, sorted."""
    if not src.is_dir():
        raise PackagingError(f"目录不存在 / no such directory: {src}")
    found = []
    for path in sorted(src.rglob("*")):
        relative = path.relative_to(src)
        if relative.parts[0] in excluded or "__pycache__" in relative.parts:
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and _SOURCE_FILE.fullmatch(path.name):
            found.append((path, relative))
    return found


def _zip_tree(src: Path, zip_path: Path) -> Package:
    files = [(p, p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()]
    return _zip_files(files, zip_path)


def _zip_files(files: Sequence[tuple[Path, Path]], zip_path: Path) -> Package:
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, relative in sorted(files, key=lambda item: item[1].as_posix()):
            info = zipfile.ZipInfo(relative.as_posix(), date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            archive.writestr(info, path.read_bytes())
    partial.replace(zip_path)
    return Package(path=zip_path, size=zip_path.stat().st_size, files=len(files))
