"""Import files are read row by row, with their headers mapped to the template's field names."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from caiyun.domain import owner_import
from caiyun.imports.files import OWNER_COLUMNS, read_rows
from caiyun.stores import houses as house_store

COMMUNITY = {
    "province": "广东省",
    "city": "深圳市",
    "district": "南山区",
    "name": "彩云花园",
    "address": "科技南路 1 号",
}


def write_xlsx(path: Path, lines: list[list[Any]]) -> Path:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("业主")
    for line in lines:
        sheet.append(line)
    workbook.save(path)
    return path


def write_csv(path: Path, text: str, encoding: str = "utf-8-sig") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_xlsx_headers_in_chinese_map_to_field_names_and_cells_are_cleaned(tmp_path):
    path = write_xlsx(
        tmp_path / "owners.xlsx",
        [
            ["楼栋", "单元", "房号", "业主姓名", "业主手机号", "备注"],
            [3, 2, 1201, "  张三 ", 13800000001, "已交房"],
            [3.0, "2单元", "1202", "李四", "13800000002", None],
        ],
    )

    rows = list(read_rows(path, OWNER_COLUMNS))

    assert rows == [
        {
            "building": 3,
            "unit": 2,
            "room": 1201,
            "owner_name": "张三",
            "owner_phone": 13800000001,
        },
        {
            "building": 3,
            "unit": "2单元",
            "room": "1202",
            "owner_name": "李四",
            "owner_phone": "13800000002",
        },
    ]


def test_csv_with_bom_and_english_headers_in_any_case_is_read(tmp_path):
    path = write_csv(
        tmp_path / "owners.csv",
        "Building,UNIT, Room ,Owner Name,owner_phone\n1栋,1单元,101,王五,13800000003\n",
    )

    assert list(read_rows(path, OWNER_COLUMNS)) == [
        {
            "building": "1栋",
            "unit": "1单元",
            "room": "101",
            "owner_name": "王五",
            "owner_phone": "13800000003",
        }
    ]


def test_alternative_spellings_and_required_markers_in_headers_are_accepted(tmp_path):
    path = write_csv(
        tmp_path / "owners.csv",
        "*楼号,单元号(必填),房间号,姓名,手机号\n5,1,502,赵六,13800000004\n",
    )

    (row,) = read_rows(path, OWNER_COLUMNS)

    assert row == {
        "building": "5",
        "unit": "1",
        "room": "502",
        "owner_name": "赵六",
        "owner_phone": "13800000004",
    }


def test_blank_rows_are_skipped_and_blank_cells_left_out(tmp_path):
    path = write_xlsx(
        tmp_path / "owners.xlsx",
        [
            ["楼栋", "单元", "房号", "业主姓名", "业主手机号"],
            [None, None, None, None, None],
            [1, 1, 101, "张三", "13800000001"],
            ["", "  ", None],
            [1, 1, None, "李四", "13800000002"],
            [],
        ],
    )

    rows = list(read_rows(path, OWNER_COLUMNS))

    assert len(rows) == 2
    assert "room" not in rows[1]  # left out, so the import reports it as missing
    assert rows[1]["owner_name"] == "李四"


def test_rows_with_nothing_in_any_known_column_are_skipped(tmp_path):
    path = write_csv(
        tmp_path / "owners.csv",
        "楼栋,单元,房号,业主姓名,业主手机号,备注\n1,1,101,张三,13800000001,\n,,,,,以上共 1 户\n",
    )

    assert [r["room"] for r in read_rows(path, OWNER_COLUMNS)] == ["101"]


def test_a_title_row_above_the_header_is_skipped_and_line_numbers_follow_the_file(tmp_path):
    path = write_xlsx(
        tmp_path / "owners.xlsx",
        [
            ["彩云花园业主信息表"],
            ["楼栋", "单元", "房号", "业主姓名", "业主手机号"],
            [1, 1, 101, "张三", "13800000001"],
            [None],
            [1, 1, 102, "李四", "13800000002"],
        ],
    )

    rows = list(read_rows(path, OWNER_COLUMNS, line_field="line"))

    assert [(r["room"], r["line"]) for r in rows] == [(101, 3), (102, 5)]


def test_unknown_file_type_is_refused_in_chinese(tmp_path):
    path = tmp_path / "owners.txt"
    path.write_text("楼栋,单元,房号,业主姓名,业主手机号\n", encoding="utf-8")

    with pytest.raises(ValueError, match="不支持的文件类型"):
        read_rows(path, OWNER_COLUMNS)


def test_old_xls_files_are_refused_with_a_way_out(tmp_path):
    path = tmp_path / "owners.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0")

    with pytest.raises(ValueError, match=r"\.xlsx"):
        read_rows(path, OWNER_COLUMNS)


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="找不到文件"):
        read_rows(tmp_path / "nowhere.csv", OWNER_COLUMNS)


def test_a_missing_column_is_named_before_any_row_is_read(tmp_path):
    path = write_xlsx(
        tmp_path / "owners.xlsx",
        [["楼栋", "单元", "业主姓名", "业主手机号"], [1, 1, "张三", "13800000001"]],
    )

    with pytest.raises(ValueError, match="缺少必需的列") as refused:
        read_rows(path, OWNER_COLUMNS)  # raised by the call itself, not on first iteration

    assert "房号" in str(refused.value)
    assert "楼栋" not in str(refused.value)


def test_a_file_without_any_known_header_names_every_required_column(tmp_path):
    path = write_csv(tmp_path / "owners.csv", "a,b,c\n1,2,3\n")

    with pytest.raises(ValueError) as refused:
        read_rows(path, OWNER_COLUMNS)

    for spelling in ("楼栋", "单元", "房号", "业主姓名", "业主手机号"):
        assert spelling in str(refused.value)


def test_an_empty_file_is_refused_as_missing_columns(tmp_path):
    path = write_csv(tmp_path / "owners.csv", "")

    with pytest.raises(ValueError, match="缺少必需的列"):
        read_rows(path, OWNER_COLUMNS)


def test_optional_columns_may_be_absent(tmp_path):
    columns = {"building": ("楼栋",), "note": ("备注",)}
    path = write_csv(tmp_path / "rows.csv", "楼栋\n3\n")

    assert list(read_rows(path, columns, optional={"note"})) == [{"building": "3"}]


def test_two_columns_meaning_the_same_field_are_refused(tmp_path):
    path = write_csv(
        tmp_path / "owners.csv",
        "楼栋,单元,房号,业主姓名,姓名,业主手机号\n1,1,101,张三,张三,13800000001\n",
    )

    with pytest.raises(ValueError, match=r"业主姓名.*姓名"):
        read_rows(path, OWNER_COLUMNS)


def test_a_csv_that_is_not_utf8_is_refused_with_how_to_save_it(tmp_path):
    path = write_csv(
        tmp_path / "owners.csv",
        "楼栋,单元,房号,业主姓名,业主手机号\n1,1,101,张三,13800000001\n",
        encoding="gbk",
    )

    with pytest.raises(ValueError, match="UTF-8"):
        list(read_rows(path, OWNER_COLUMNS))


def test_a_file_that_is_not_a_workbook_is_refused(tmp_path):
    path = tmp_path / "owners.xlsx"
    path.write_text("not a zip", encoding="utf-8")

    with pytest.raises(ValueError, match="无法读取 Excel 文件"):
        read_rows(path, OWNER_COLUMNS)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("suffix", ["xlsx", "csv"])
def test_the_file_is_closed_when_rows_run_out_or_the_reader_is_closed(tmp_path, suffix):
    lines = [["楼栋", "单元", "房号", "业主姓名", "业主手机号"], [1, 1, 101, "张三", "13800000001"]]
    if suffix == "xlsx":
        path = write_xlsx(tmp_path / "owners.xlsx", lines)
    else:
        text = "\n".join(",".join(str(c) for c in line) for line in lines) + "\n"
        path = write_csv(tmp_path / "owners.csv", text)
    before = open_fds()

    exhausted = read_rows(path, OWNER_COLUMNS)
    assert open_fds() > before  # open from the call on, header checked
    assert len(list(exhausted)) == 1
    assert open_fds() == before

    abandoned = read_rows(path, OWNER_COLUMNS)
    abandoned.close()
    assert open_fds() == before


def test_importing_the_files_module_does_not_import_the_spreadsheet_reader():
    code = "import sys, caiyun.imports.files; print('python_calamine' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert out.strip() == "False"


def test_rows_from_a_spreadsheet_import_with_bare_numbers_as_building_and_unit(services, tmp_path):
    path = write_xlsx(
        tmp_path / "owners.xlsx",
        [
            ["楼栋", "单元", "房号", "业主姓名", "业主手机号"],
            [3, 2, 1201, "张三", 13800000001],
            ["3栋", "2单元", "1202", "李四", "13800000002"],
            [3, 2, None, "王五", "13800000003"],
        ],
    )

    report = owner_import.import_owners(services, COMMUNITY, read_rows(path, OWNER_COLUMNS))

    assert [r.status for r in report.rows] == ["created", "created", "error"]
    assert [r.label for r in report.rows[:2]] == ["3栋-2单元-1201", "3栋-2单元-1202"]
    assert "房号" in (report.rows[2].reason or "")
    house = house_store.by_address(
        services.db, report.community_id, building="3栋", unit="2单元", room="1201"
    )
    assert house is not None and house["owner_phone"] == "13800000001"


ROWS = 20_000


@pytest.fixture(scope="module")
def big_xlsx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "owners.xlsx"
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("业主")
    sheet.append(["楼栋", "单元", "房号", "业主姓名", "业主手机号"])
    for i in range(ROWS):
        sheet.append([i // 400 + 1, i // 100 % 4 + 1, 101 + i % 100, f"业主{i}", f"138{i:08d}"])
    workbook.save(path)
    return path


def test_a_large_spreadsheet_is_streamed_not_loaded(big_xlsx):
    tracemalloc.start()
    try:
        rows = read_rows(big_xlsx, OWNER_COLUMNS)
        first = next(rows)
        _, first_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == {
        "building": 1,
        "unit": 1,
        "room": 101,
        "owner_name": "业主0",
        "owner_phone": "13800000000",
    }
    # Rows become Python objects one at a time (the cells wait in the reader's own compact
    # memory): the whole sheet as Python rows takes about 40 MB.
    assert first_peak < 8_000_000

    skipped = sum(1 for _ in itertools.islice(rows, ROWS // 2))
    tracemalloc.start()
    try:
        window = sum(1 for _ in itertools.islice(rows, 2_000))
        _, window_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Reading further holds no more memory than a few rows, however many came before.
    assert window_peak < 1_000_000

    rest = list(rows)
    assert 1 + skipped + window + len(rest) == ROWS
    assert rest[-1]["owner_name"] == f"业主{ROWS - 1}"
