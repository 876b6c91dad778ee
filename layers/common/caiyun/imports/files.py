"""Streaming readers for import files: ``.xlsx`` and ``.csv``, one row at a time.

A file's header row names its columns; each column is mapped to a canonical field name through a
table of accepted spellings (Chinese and English). Rows are read lazily, so a file with hundreds
of thousands of houses never sits in memory: the import takes one row, writes it, and moves on.

Every problem with the file itself (unsupported type, unreadable file, missing column) is a
``ValueError`` whose message is Chinese and fit to show the operator. Problems with a row's
values are not raised here: the row is passed on as read and the import reports it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

Columns = Mapping[str, tuple[str, ...]]

# The owner template: one house per row with its owner. Bare numbers in 楼栋 and 单元 become
# "3栋" and "2单元" in the import itself (caiyun.domain.owner_import).
OWNER_COLUMNS: dict[str, tuple[str, ...]] = {
    "building": ("楼栋", "楼号", "楼栋号", "栋", "幢", "building"),
    "unit": ("单元", "单元号", "unit"),
    "room": ("房号", "房间号", "门牌号", "室", "room"),
    "owner_name": ("业主姓名", "业主", "姓名", "owner_name", "owner", "name"),
    "owner_phone": (
        "业主手机号",
        "业主手机",
        "手机号",
        "手机号码",
        "手机",
        "联系电话",
        "owner_phone",
        "phone",
        "mobile",
    ),
}

# The bill template: one bill per row, for the house at 楼栋-单元-房号.
BILL_COLUMNS: dict[str, tuple[str, ...]] = {
    "building": OWNER_COLUMNS["building"],
    "unit": OWNER_COLUMNS["unit"],
    "room": OWNER_COLUMNS["room"],
    "period": ("账期", "计费周期", "所属期", "月份", "period"),
    "item": ("收费项目", "费用项目", "项目", "item"),
    "amount_fen": ("金额（分）", "金额(分)", "应收金额（分）", "金额分", "amount_fen"),
    "due_date": ("缴费截止日", "截止日期", "到期日", "due_date"),
}

# The header is the first row, among this many, that has at least one known column name; rows
# above it (a title such as "彩云花园业主信息") are skipped.
HEADER_SEARCH_ROWS = 20

_XLSX_SUFFIXES = (".xlsx", ".xlsm")
_CSV_SUFFIXES = (".csv",)
_READY: Any = object()
# Marks a template may put on a header: "*楼栋", "楼栋(必填)", "Owner Name".
_HEADER_NOISE = re.compile(r"[*＊\s_\-]|[(（]\s*必填\s*[)）]")


def _header_key(value: Any) -> str:
    return _HEADER_NOISE.sub("", str(value)).casefold()


def _lookup(columns: Columns) -> dict[str, str]:
    """Normalised header spelling → canonical field name."""
    lookup: dict[str, str] = {}
    for name, spellings in columns.items():
        for spelling in (name, *spellings):
            key = _header_key(spelling)
            if lookup.setdefault(key, name) != name:
                raise ValueError(f"header spelling {spelling!r} names two columns")
    return lookup


def _describe(name: str, columns: Columns) -> str:
    spellings = columns.get(name) or ()
    return f"{spellings[0]}（{name}）" if spellings and spellings[0] != name else name


def _map_header(cells: Sequence[Any], lookup: dict[str, str], columns: Columns) -> dict[int, str]:
    """Cell position → canonical field, for the columns this header names."""
    found: dict[int, str] = {}
    seen: dict[str, Any] = {}
    for index, cell in enumerate(cells):
        if cell is None:
            continue
        name = lookup.get(_header_key(cell))
        if name is None:
            continue
        if name in seen:
            raise ValueError(
                f"表头中「{seen[name]}」和「{str(cell).strip()}」都表示"
                f"{_describe(name, columns)}，请只保留一列"
            )
        seen[name] = str(cell).strip()
        found[index] = name
    return found


def _clean(value: Any) -> Any:
    """A cell as the import wants it: text stripped, blank as None, 3.0 as 3."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _xlsx_lines(path: Path) -> Generator[tuple[int, Sequence[Any]], None, None]:
    # python-calamine (the Rust calamine reader) parses a sheet about twenty times faster than
    # openpyxl's read-only mode: at 100,000 bill rows parsing alone took longer than writing
    # the bills (bench/README.md). It holds the sheet's cells in its own compact memory and
    # hands them out a row at a time. Imported here: only the import needs it.
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except (CalamineError, OSError, ValueError):
        raise ValueError(f"无法读取 Excel 文件：{path.name}，请确认它是 .xlsx 格式") from None
    try:
        # The sheet's cells start at its first used cell: count lines from the sheet's top.
        first_line = (sheet.start or (0, 0))[0] + 1
        yield from enumerate(sheet.iter_rows(), start=first_line)
    finally:
        workbook.close()


def _csv_lines(path: Path) -> Generator[tuple[int, Sequence[Any]], None, None]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        line = 0
        try:
            for line, cells in enumerate(reader, start=1):
                yield line, cells
        except UnicodeDecodeError:
            raise ValueError(
                "CSV 文件须为 UTF-8 编码：请在 Excel 中另存为「CSV UTF-8（逗号分隔）」"
            ) from None
        except csv.Error:
            raise ValueError(f"CSV 文件第 {line + 1} 行格式有误") from None


def _stream(
    path: Path,
    columns: Columns,
    required: list[str],
    line_field: str | None,
) -> Generator[Any, None, None]:
    lines = _xlsx_lines(path) if path.suffix.lower() in _XLSX_SUFFIXES else _csv_lines(path)
    lookup = _lookup(columns)
    try:
        header: dict[int, str] = {}
        for line, cells in lines:
            header = _map_header(cells, lookup, columns)
            if header or line >= HEADER_SEARCH_ROWS:
                break
        missing = [name for name in required if name not in header.values()]
        if missing:
            named = "、".join(_describe(name, columns) for name in missing)
            raise ValueError(f"缺少必需的列：{named}")
        yield _READY
        for line, cells in lines:
            row = {}
            for index, name in header.items():
                value = _clean(cells[index]) if index < len(cells) else None
                if value is not None:
                    row[name] = value
            if not row:
                continue  # a blank row, or one with nothing in any known column
            if line_field is not None:
                row[line_field] = line
            yield row
    finally:
        lines.close()


def read_rows(
    path: Path,
    columns: dict[str, tuple[str, ...]],
    *,
    optional: Collection[str] = (),
    line_field: str | None = None,
) -> Generator[dict[str, Any], None, None]:
    """The data rows of an ``.xlsx`` (first sheet) or UTF-8 ``.csv`` file, one dict per row.

    ``columns`` maps each canonical field name to the header spellings accepted for it (case,
    spaces, ``_``, ``-``, ``*`` and "(必填)" are ignored when matching; the canonical name itself
    is always accepted). Columns not named in ``columns`` are ignored. Each row maps canonical
    names to cell values: text stripped, whole-number floats as ints, blank cells left out (so
    the import reports them as missing). Rows with nothing in any known column are skipped.
    With ``line_field``, each row also carries its line number in the file under that key.

    The file is opened and its header checked before this returns, so a wrong file fails before
    any row is imported: ValueError for an unsupported type, an unreadable file, or a missing
    column (every column not in ``optional`` is required). The rows themselves are read lazily;
    the file is closed when they are exhausted or the iterator is closed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise ValueError("不支持旧版 .xls 文件，请在 Excel 中另存为 .xlsx 或 CSV UTF-8")
    if suffix not in _XLSX_SUFFIXES + _CSV_SUFFIXES:
        raise ValueError(f"不支持的文件类型「{path.suffix or path.name}」，请使用 .xlsx 或 .csv")
    if not path.is_file():
        raise ValueError(f"找不到文件：{path}")
    required = [name for name in columns if name not in optional]
    rows = _stream(path, columns, required, line_field)
    next(rows)  # opens the file and checks the header
    return rows
