"""物业后台 in a real browser: Debian's chromium driven by Playwright against `caiyun dev`
(a subprocess on a free port, its clock started at the test moment), as the property office uses
it: sign in by SMS code, import bills with a bad row and download the failed rows, filter and
export 已交/未交, and remind with the true counts. Every page is screenshotted at 1366×768 into
``$CAIYUN_ARTIFACTS/console`` (``.caiyun/artifacts`` unless set) and no page may log an error.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TEST_START
from sandbox_client import App, advance, latest_code, login_by_api

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (scripts/test installs it with apt-get as root)",
        allow_module_level=True,
    )

ARTIFACTS = Path(os.environ.get("CAIYUN_ARTIFACTS", ".caiyun/artifacts")) / "console"
ADMIN = "13900000002"  # 吴刚, admin of 彩云花园 (demo data)
# Flags as the machine's own probe ran Debian's chromium: no network beyond loopback here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`caiyun dev --port 0` in a subprocess, on a new data directory with the demo data."""
    data_dir = tmp_path_factory.mktemp("console-data")
    command = [
        sys.executable,
        "-c",
        "import sys; from caiyun.cli import main; sys.exit(main())",
        "dev",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--clock-start",
        TEST_START.isoformat(),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "http://" in first, first
        yield first.split(": ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, sandbox_url: str) -> Iterator[Any]:
    """A fresh browser window of 1366×768 that records every error the page logs."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    opened = context.new_page()
    opened.errors = []
    opened.on(
        "console", lambda m: m.type == "error" and opened.errors.append(f"{m.text} {m.location}")
    )
    opened.on("pageerror", lambda e: opened.errors.append(str(e)))
    opened.base = sandbox_url
    yield opened
    assert opened.errors == []
    context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, phone: str = ADMIN) -> None:
    # Past the previous code's resend interval: each test signs in anew.
    advance(page.base, 120)
    page.goto(f"{page.base}/console/")
    page.fill("#phone", phone)
    page.click("#send-code")
    page.wait_for_selector("text=验证码已发送")
    page.fill("#code", latest_code(page.base, phone))
    page.click("#login")
    page.wait_for_selector("#overview")


def test_an_admin_signs_in_by_sms_code_and_sees_the_community_overview(page: Any) -> None:
    page.goto(f"{page.base}/console/")
    shot(page, "login")
    sign_in(page)
    overview = page.inner_text("#overview")
    # Five houses of 彩云花园, each owing 268.00 + 268.00 + 35.60 元.
    assert "房屋\n5 户" in overview and "已绑定房屋\n1 户" in overview  # 张伟's 101
    assert "未交房屋\n5 户" in overview
    assert "未交金额\n2858.00 元" in overview
    assert page.inner_text("#community") == "彩云花园"
    shot(page, "overview")
    for route in ("repairs", "complaints", "notices", "staff", "members"):
        page.goto(f"{page.base}/console/#/{route}")
        page.wait_for_selector(".main h2")
        page.wait_for_load_state("networkidle")
        shot(page, route)


def test_a_resident_cannot_sign_in_to_the_console(page: Any) -> None:
    advance(page.base, 120)
    page.goto(f"{page.base}/console/")
    page.fill("#phone", "13800000002")  # 李娜, an owner
    page.click("#send-code")
    page.wait_for_selector("text=验证码已发送")
    page.fill("#code", latest_code(page.base, "13800000002"))
    page.click("#login")
    page.wait_for_selector("text=该账号不是物业工作人员")
    assert page.url.endswith("/console/") and page.locator("#overview").count() == 0
    # The login's refusal (403) is the only error the browser logs, and it is the expected one.
    assert [e.split(" {")[0] for e in page.errors] == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    page.errors.clear()


def test_a_bill_import_with_a_bad_row_reports_it_and_its_failed_rows_download(
    page: Any, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    bills = tmp_path / "十二月账单.csv"
    bills.write_text(
        "楼栋,单元,房号,账期,收费项目,金额（分）,缴费截止日\n"
        "1,1,101,2026-12,物业费,26800,2026-12-31\n"
        "1,1,102,2026-12,物业费,二百六十八,2026-12-31\n"
        "1,2,201,2026-12,物业费,26800,2026-12-31\n",
        encoding="utf-8",
    )
    sign_in(page)
    page.click("text=业主与账单导入")
    page.set_input_files("#import-file", str(bills))
    page.click("#import-start")
    page.wait_for_selector("#import-status:has-text('已完成')")
    assert "3 / 3 行（新增 2，更新 0，无变化 0，有误 1）" in page.inner_text("#import-status")
    failed = page.inner_text("#failed-rows")
    assert "金额（分）金额须为整数（分）" in failed.replace("\t", "")
    shot(page, "import")
    with page.expect_download() as fetched:
        page.click("#import-download")
    saved = tmp_path / fetched.value.suggested_filename
    fetched.value.save_as(saved)
    rows = list(load_workbook(saved).active.iter_rows(values_only=True))
    assert rows[0][-2:] == ("错误原因", "原行号")
    assert rows[1][:6] == ("1", "1", "102", "2026-12", "物业费", "二百六十八")
    assert rows[1][-1] == 3


def test_the_unpaid_filter_exports_xlsx_and_reminders_give_the_true_counts(
    page: Any, tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    sign_in(page)
    page.click("text=已交/未交")
    page.wait_for_selector("#dues tbody tr")
    assert page.inner_text("#tab-unpaid").startswith("未交（")
    page.fill("#f-building", "1栋")
    page.click("#f-search")
    page.wait_for_selector("text=共 3 户")
    labels = page.locator("#dues tbody tr td:nth-child(2)").all_inner_texts()
    assert labels == ["1栋-1单元-101", "1栋-1单元-102", "1栋-2单元-201"]
    shot(page, "dues")
    with page.expect_download() as fetched:
        page.click("#export")
    saved = tmp_path / "export.xlsx"
    fetched.value.save_as(saved)
    assert fetched.value.suggested_filename == "彩云花园-未交.xlsx"
    rows = list(load_workbook(saved).active.iter_rows(values_only=True))
    assert rows[0][:3] == ("房屋", "楼栋", "单元")
    assert [r[0] for r in rows[1:]] == labels
    shown = page.locator("#dues tbody tr").first.locator("td").all_inner_texts()
    assert shown[1:5] == ["1栋-1单元-101", "张伟", "13800000001", "未交"]
    assert shown[6].endswith(" 元") and shown[6].split(".")[1] == "60 元"  # 元 with two decimals
    assert rows[1][4:9] == ("张伟", "13800000001", "未交", int(shown[5]), float(shown[6][:-2]))

    # 张伟 is the only owner of 彩云花园 bound in the app; the rest have nobody to tell.
    page.click("#remind-all")
    page.wait_for_selector("#remind-result .card")
    first = page.inner_text("#remind-result")
    page.click("#remind-all")
    page.wait_for_selector("#remind-result:has-text('本轮已提醒过 1 户')")
    again = page.inner_text("#remind-result")
    shot(page, "remind")
    assert first.startswith("未交 ") and "本次已提醒 1 户" in first and "无人绑定" in first
    assert "本次已提醒 0 户" in again and "通知 0 个账号" in again

    page.fill("#f-building", "")
    page.fill("#f-phone", "13800000002")
    page.click("#f-search")
    page.wait_for_selector("text=共 1 户")
    assert page.locator("#dues tbody tr td:nth-child(2)").all_inner_texts() == ["1栋-1单元-102"]


# A 1×1 PNG: the photo a resident attaches to a repair.
PHOTO = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def reported_repair(base: str) -> str:
    """张伟 reports a leak with a photo from the resident app (over /api); returns its id."""
    advance(base, 120)
    owner = App(base, token=login_by_api(base, "13800000001"))
    house = owner.ok("bind_house", "my_houses")["items"][0]["house_id"]
    slot = owner.ok("repair", "upload_url", purpose="report", filename="leak.png")
    put = requests.put(slot["url"], data=PHOTO, headers=slot["headers"], timeout=10)
    assert put.status_code == 200
    made = owner.ok(
        "repair",
        "create",
        house_id=house,
        category="water_electric",
        description="厨房水管漏水",
        contact_phone="13800000001",
        images=[slot["file_id"]],
    )
    return made["repair_id"]


def test_an_admin_dispatches_a_repair_seeing_its_photo_and_timeline(page: Any) -> None:
    reported_repair(page.base)
    sign_in(page)
    page.click("text=报修看板")
    page.click("#repairs tbody tr:has-text('厨房水管漏水')")
    page.wait_for_selector("#repair-detail img")
    assert page.eval_on_selector("#repair-detail img", "img => img.naturalWidth") == 1
    page.select_option("#repairman", label="郑师傅（在办 0）")
    page.click("#dispatch")
    page.wait_for_selector("#repair-detail:has-text('待上门')")
    timeline = page.inner_text("#repair-detail .timeline")
    assert "报修" in timeline and "派单" in timeline
    assert "待上门（1）" in page.inner_text(".tabs")
    shot(page, "repair-dispatched")


def test_an_admin_publishes_a_notice_to_the_community(page: Any) -> None:
    sign_in(page)
    page.click("text=公告")
    page.fill("#notice-title", "电梯年检通知")
    page.fill("#notice-content", "12 月 1 日 9:00-12:00 1 栋电梯年检，暂停使用。")
    page.click("#publish")
    page.wait_for_selector("#notices:has-text('电梯年检通知')")
    assert "2026/11/25" in page.inner_text("#notices")  # the sandbox clock, in Shanghai time
    shot(page, "notice-published")
