// 彩云居家 · 物业后台. Plain ES module, no build step and no third-party code: every page calls
// the cloud functions' own HTTP API (POST /api/<fn>, or the function URLs config.json names),
// with the session token the staff app's login gives. Text from the API only ever goes into the
// page as text nodes (h() below), never as HTML.

const TZ = "Asia/Shanghai";
const state = { token: sessionStorage.getItem("caiyun.token"), me: null, community: null,
  config: { functions: {} } };

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const yuan = (fen) => `${(fen / 100).toFixed(2)} 元`;
const timeFormat = new Intl.DateTimeFormat("zh-CN", { timeZone: TZ, year: "numeric",
  month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
const when = (iso) => (iso ? timeFormat.format(new Date(iso)) : "—");
const tag = (code, name) => h("span", { class: `tag ${code}` }, name);

class ApiError extends Error {
  constructor(error) { super(error.message); this.code = error.code; this.details = error.details; }
}

async function call(fn, action, body = {}) {
  const url = state.config.functions[fn] || `/api/${fn}`;
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let envelope;
  try {
    const reply = await fetch(url, { method: "POST", headers, body: JSON.stringify({ action, ...body }) });
    envelope = await reply.json();
  } catch {
    // No answer, or not the contract's envelope (a gateway's error page): say so, retryable.
    throw new ApiError({ code: "UNAVAILABLE", message: "网络异常或服务暂不可用，请稍后重试" });
  }
  if (!envelope.ok) {
    if (envelope.error.code === "UNAUTHENTICATED" && action !== "login") signOut();
    throw new ApiError(envelope.error);
  }
  return envelope.data;
}

function toast(text, isError = false) {
  const el = h("div", { class: `toast${isError ? " error" : ""}`, role: "status" }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 3000);
}

function explain(error) {
  const fields = error.details && error.details.fields;
  const more = fields ? `（${Object.values(fields).join("；")}）` : "";
  return `${error.message}${more}`;
}

// Wraps a handler: a refusal becomes a red message instead of an unhandled rejection.
const guard = (run) => async (event) => {
  try { await run(event); } catch (error) {
    if (error instanceof ApiError) toast(explain(error), true); else throw error;
  }
};

function download(filename, blob) {
  const link = h("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ---- a minimal .xlsx writer: one sheet of text and numbers, stored (uncompressed) zip ------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
function zip(files) {
  const encoder = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const [name, text] of files) {
    const nameBytes = encoder.encode(name);
    const data = encoder.encode(text);
    const crc = crc32(data);
    const local = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [6, 0x0800, 2], [14, crc, 4], [18, data.length, 4],
      [22, data.length, 4], [26, nameBytes.length, 2]].forEach(([at, v, size]) =>
      (size === 4 ? local.setUint32(at, v, true) : local.setUint16(at, v, true)));
    const entry = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [8, 0x0800, 2], [16, crc, 4],
      [20, data.length, 4], [24, data.length, 4], [28, nameBytes.length, 2], [42, offset, 4]]
      .forEach(([at, v, size]) =>
        (size === 4 ? entry.setUint32(at, v, true) : entry.setUint16(at, v, true)));
    parts.push(local, nameBytes, data);
    central.push(entry, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const size = central.reduce((n, part) => n + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end]);
}
const xmlText = (s) => String(s).replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`)
  // Characters XML 1.0 cannot hold at all.
  .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, "");
function xlsx(rows) {
  const sheetRows = rows.map((row, r) => `<row r="${r + 1}">${row.map((value) =>
    (typeof value === "number"
      ? `<c><v>${value}</v></c>`
      : `<c t="inlineStr"><is><t xml:space="preserve">${xmlText(value ?? "")}</t></is></c>`))
    .join("")}</row>`).join("");
  const ns = "http://schemas.openxmlformats.org";
  return zip([
    ["[Content_Types].xml", `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="${ns}/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>`],
    ["_rels/.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="${ns}/package/2006/relationships"><Relationship Id="rId1" Type="${ns}/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`],
    ["xl/workbook.xml", `<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="${ns}/spreadsheetml/2006/main" xmlns:r="${ns}/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>`],
    ["xl/_rels/workbook.xml.rels", `<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="${ns}/package/2006/relationships"><Relationship Id="rId1" Type="${ns}/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`],
    ["xl/worksheets/sheet1.xml", `<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="${ns}/spreadsheetml/2006/main"><sheetData>${sheetRows}</sheetData></worksheet>`],
  ]);
}

// ---- sign-in and the frame -----------------------------------------------------------------

function signOut() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("caiyun.token");
  location.hash = "#/login";
  render();
}

function loginPage() {
  const phone = h("input", { id: "phone", placeholder: "手机号", maxlength: 11, inputmode: "numeric" });
  const code = h("input", { id: "code", placeholder: "6 位验证码", maxlength: 6, inputmode: "numeric" });
  const message = h("p", { class: "error" });
  const sendButton = h("button", { id: "send-code", type: "button", onclick: guard(async () => {
    await call("login", "send_code", { phone: phone.value.trim(), purpose: "login" });
    toast("验证码已发送");
  }) }, "获取验证码");
  const submit = async (event) => {
    event.preventDefault();
    message.textContent = "";
    try {
      const data = await call("login", "login",
        { phone: phone.value.trim(), code: code.value.trim(), app: "staff" });
      state.token = data.session_token;
      const me = await call("login", "me");
      if (!me.staff || me.staff.role !== "admin") {
        await call("login", "logout");
        state.token = null;
        message.textContent = "仅物业管理员可登录后台";
        return;
      }
      sessionStorage.setItem("caiyun.token", state.token);
      state.me = me;
      location.hash = "#/overview";
      render();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      message.textContent = explain(error);
    }
  };
  return h("form", { class: "login", onsubmit: submit },
    h("h1", {}, "彩云居家 · 物业后台"),
    h("label", { for: "phone" }, "手机号"), phone,
    h("label", { for: "code" }, "验证码"), h("div", { class: "row" }, code, sendButton),
    message,
    h("button", { class: "primary", type: "submit", id: "login", style: "width:100%;margin-top:16px" },
      "登录"));
}

const PAGES = [
  ["overview", "概览", overviewPage],
  ["import", "业主与账单导入", importPage],
  ["dues", "已交/未交", duesPage],
  ["repairs", "报修看板", repairsPage],
  ["complaints", "投诉建议", complaintsPage],
  ["notices", "公告", noticesPage],
  ["staff", "员工", staffPage],
  ["members", "住户成员", membersPage],
];

function frame(current, body) {
  const communities = state.me.staff.communities;
  const picker = h("select", { id: "community", "aria-label": "小区", onchange: (e) => {
    state.community = e.target.value;
    sessionStorage.setItem("caiyun.community", state.community);
    render();
  } }, communities.map((c) => h("option", { value: c.community_id,
    selected: c.community_id === state.community }, c.name)));
  return h("div", { class: "shell" },
    h("header", { class: "top" },
      h("span", { class: "brand" }, "彩云居家 · 物业后台"),
      picker,
      h("span", {}, `${state.me.name || state.me.phone}（${state.me.staff.role_name}）`),
      h("button", { type: "button", onclick: guard(async () => {
        await call("login", "logout");
        signOut();
      }) }, "退出")),
    h("nav", { class: "side" }, PAGES.map(([key, title]) =>
      h("a", { href: `#/${key}`, class: key === current ? "on" : null }, title))),
    h("main", { class: "main" }, body));
}

async function render() {
  const app = document.getElementById("app");
  const route = location.hash.replace(/^#\//, "") || "overview";
  if (!state.token) {
    app.replaceChildren(loginPage());
    return;
  }
  if (!state.me) {
    try { state.me = await call("login", "me"); } catch (error) {
      if (error instanceof ApiError) { signOut(); return; }
      throw error;
    }
    if (!state.me.staff || state.me.staff.role !== "admin") { signOut(); return; }
  }
  const ids = state.me.staff.communities.map((c) => c.community_id);
  const kept = sessionStorage.getItem("caiyun.community");
  if (!ids.includes(state.community)) state.community = ids.includes(kept) ? kept : ids[0];
  const [key, title, page] = PAGES.find(([k]) => k === route) || PAGES[0];
  const body = h("div", {}, h("h2", {}, title), h("p", { class: "loading" }, "加载中……"));
  app.replaceChildren(frame(key, body));
  if (!state.community) {
    body.lastChild.replaceWith(h("p", {}, "您还没有负责的小区。"));
    return;
  }
  try {
    body.lastChild.replaceWith(await page());
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    body.lastChild.replaceWith(h("p", { class: "error" }, explain(error)));
  }
}

const community = () => state.me.staff.communities.find((c) => c.community_id === state.community);

// ---- 概览 -----------------------------------------------------------------------------------

async function overviewPage() {
  const id = state.community;
  const [glance, summary, houses, repairs, complaints] = await Promise.all([
    call("admin", "overview", { community_id: id }),
    call("bills", "staff_summary", { community_id: id }),
    call("bills", "staff_houses", { community_id: id, page_size: 1 }),
    call("repair", "staff_list", { community_id: id, page_size: 1 }),
    call("complaint", "staff_list", { community_id: id, page_size: 1 }),
  ]);
  const stat = (label, value, red) =>
    h("div", { class: "stat" }, h("div", { class: "note" }, label),
      h("div", { class: `n${red ? " red" : ""}` }, value));
  return h("div", {},
    h("div", { class: "stats", id: "overview" },
      stat("房屋", `${glance.houses} 户`),
      stat("已绑定房屋", `${glance.bound_houses} 户`),
      stat("有账单的房屋", `${houses.counts.unpaid + houses.counts.paid} 户`),
      stat("未交房屋", `${houses.counts.unpaid} 户`, true),
      stat("未交金额", yuan(summary.unpaid_fen), true),
      stat("已交金额", yuan(summary.paid_fen)),
      stat("待处理报修", `${repairs.counts.pending + repairs.counts.dispatched} 单`),
      stat("未办结投诉", `${complaints.counts.submitted + complaints.counts.processing} 件`)),
    h("div", { class: "card", style: "margin-top:16px" },
      h("h3", {}, "各楼栋收缴"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "楼栋"), h("th", { class: "num" }, "已交笔数"),
        h("th", { class: "num" }, "已交金额"), h("th", { class: "num" }, "未交笔数"),
        h("th", { class: "num" }, "未交金额"))),
      h("tbody", {}, summary.by_building.map((b) => h("tr", {}, h("td", {}, b.building),
        h("td", { class: "num" }, b.paid_count), h("td", { class: "num" }, yuan(b.paid_fen)),
        h("td", { class: "num" }, b.unpaid_count), h("td", { class: "num" }, yuan(b.unpaid_fen))))))));
}

// ---- 导入 -----------------------------------------------------------------------------------

function importPage() {
  const kind = h("select", { id: "import-kind" }, h("option", { value: "bills" }, "账单"),
    h("option", { value: "owners" }, "业主与房屋"));
  const region = {
    province: h("input", { id: "import-province", placeholder: "省，如 广东省" }),
    city: h("input", { id: "import-city", placeholder: "市，如 深圳市" }),
    district: h("input", { id: "import-district", placeholder: "区，如 南山区" }),
    name: h("input", { id: "import-name", placeholder: "小区名称", value: community().name }),
  };
  const regionRow = h("div", { class: "filters", hidden: true }, Object.values(region));
  kind.addEventListener("change", () => { regionRow.hidden = kind.value !== "owners"; });
  const file = h("input", { id: "import-file", type: "file", accept: ".xlsx,.csv" });
  const bar = h("div", { style: "width:0%" });
  const status = h("p", { id: "import-status", class: "note" }, "选择 .xlsx 或 .csv 文件后开始导入。");
  const report = h("div", { id: "import-report" });
  const start = h("button", { class: "primary", id: "import-start", type: "button" }, "开始导入");
  start.addEventListener("click", guard(async () => {
    const chosen = file.files[0];
    if (!chosen) { toast("请先选择文件", true); return; }
    start.disabled = true;
    try {
      status.textContent = "上传中……";
      const slot = await call("admin", "import_upload_url", { filename: chosen.name });
      if (slot.url) {
        const put = await fetch(slot.url, { method: slot.method || "PUT", headers: slot.headers, body: chosen });
        if (!put.ok) throw new ApiError({ code: "UNAVAILABLE", message: "文件上传失败，请重试" });
      }
      const target = kind.value === "owners"
        ? { community: Object.fromEntries(Object.entries(region).map(([k, el]) => [k, el.value.trim()])) }
        : { community_id: state.community };
      let job = await call("admin", "start_import",
        { kind: kind.value, file_id: slot.file_id, filename: chosen.name, ...target });
      const show = () => {
        const share = job.total_rows ? Math.round((100 * job.rows_done) / job.total_rows) : 100;
        bar.style.width = `${share}%`;
        const c = job.counts;
        status.textContent = `${job.status_name}：${job.rows_done} / ${job.total_rows} 行（新增 ${c.created}，`
          + `更新 ${c.updated}，无变化 ${c.unchanged}，有误 ${c.error}）`;
      };
      show();
      while (job.status === "running") {
        job = await call("admin", "run_import", { job_id: job.job_id });
        show();
      }
      await showReport(job, report);
    } finally {
      start.disabled = false;
    }
  }));
  return h("div", {},
    h("div", { class: "card" },
      h("div", { class: "filters" }, h("label", {}, "导入内容 "), kind, file, start),
      regionRow,
      h("p", { class: "note" }, "账单模板列：楼栋、单元、房号、账期（2026-11）、收费项目、金额（分）、缴费截止日；",
        "业主模板列：楼栋、单元、房号、业主姓名、业主手机号。文件先上传到存储，再分批导入，大文件也可完成。"),
      h("div", { class: "progress" }, bar), status),
    report);
}

// The import templates' column names (caiyun.domain.owner_import.COLUMN_LABELS).
const COLUMN_LABELS = { building: "楼栋", unit: "单元", room: "房号", owner_name: "业主姓名",
  owner_phone: "业主手机号", period: "账期", item: "收费项目", amount_fen: "金额（分）",
  due_date: "缴费截止日" };

async function showReport(job, into) {
  const page = await call("admin", "import_failed_rows", { job_id: job.job_id, page_size: 100 });
  if (page.total === 0) {
    into.replaceChildren(h("div", { class: "card" }, "全部行已导入，没有错误。"));
    return;
  }
  const fields = Object.keys(COLUMN_LABELS).filter((f) => page.items.some((r) => f in r.values));
  const downloadButton = h("button", { id: "import-download", type: "button",
    onclick: guard(async () => {
      const file = await call("admin", "import_failed_file", { job_id: job.job_id });
      const bytes = Uint8Array.from(atob(file.content_base64), (c) => c.charCodeAt(0));
      download(file.filename, new Blob([bytes], { type: file.content_type }));
    }) }, "下载失败行（.xlsx）");
  into.replaceChildren(h("div", { class: "card" },
    h("div", { class: "filters" }, h("strong", {}, `${page.total} 行未导入`), downloadButton,
      h("span", { class: "note" }, "改正后可直接再次导入该文件。")),
    h("table", { id: "failed-rows" },
      h("thead", {}, h("tr", {}, h("th", {}, "原行号"), fields.map((f) => h("th", {}, COLUMN_LABELS[f] || f)), h("th", {}, "错误原因"))),
      h("tbody", {}, page.items.map((row) => h("tr", {}, h("td", {}, row.line),
        fields.map((f) => h("td", {}, row.values[f] ?? "")), h("td", { class: "error" }, row.reason)))))));
}

// ---- 已交/未交 ------------------------------------------------------------------------------

function duesPage() {
  const filters = { status: "unpaid", page: 1 };
  const inputs = {
    building: h("input", { id: "f-building", placeholder: "楼栋，如 1栋" }),
    unit: h("input", { id: "f-unit", placeholder: "单元" }),
    room: h("input", { id: "f-room", placeholder: "房号" }),
    owner_name: h("input", { id: "f-owner", placeholder: "业主姓名" }),
    owner_phone: h("input", { id: "f-phone", placeholder: "业主手机号", maxlength: 11 }),
    period: h("input", { id: "f-period", placeholder: "账期 2026-11" }),
  };
  const tabs = h("div", { class: "tabs" });
  const table = h("div", {});
  const selected = new Set();
  const query = () => {
    const q = { community_id: state.community, status: filters.status };
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q[k] = el.value.trim();
    return q;
  };
  const load = guard(async () => {
    const data = await call("bills", "staff_houses", { ...query(), page: filters.page, page_size: 20 });
    tabs.replaceChildren(...[["unpaid", "未交"], ["paid", "已交"]].map(([code, name]) =>
      h("button", { type: "button", id: `tab-${code}`, class: code === filters.status ? "on" : null,
        onclick: () => { filters.status = code; filters.page = 1; selected.clear(); load(); } },
      `${name}（${data.counts[code]}）`)));
    const pages = Math.max(1, Math.ceil(data.total / data.page_size));
    table.replaceChildren(
      h("table", { id: "dues" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "房屋"), h("th", {}, "业主"), h("th", {}, "手机号"),
          h("th", {}, "状态"), h("th", { class: "num" }, "未交笔数"), h("th", { class: "num" }, "未交金额"),
          h("th", { class: "num" }, "已交金额"))),
        h("tbody", {}, data.items.map((item) => h("tr", {},
          h("td", {}, h("input", { type: "checkbox", "aria-label": `选择 ${item.house_label}`,
            checked: selected.has(item.house_id),
            onchange: (e) => (e.target.checked ? selected.add(item.house_id) : selected.delete(item.house_id)) })),
          h("td", {}, item.house_label), h("td", {}, item.owner_name ?? "—"), h("td", {}, item.owner_phone ?? "—"),
          h("td", {}, tag(item.status, item.status_name)), h("td", { class: "num" }, item.unpaid_count),
          h("td", { class: "num" }, yuan(item.unpaid_fen)), h("td", { class: "num" }, yuan(item.paid_fen)))))),
      h("div", { class: "pager" }, `共 ${data.total} 户，第 ${data.page} / ${pages} 页`,
        h("button", { type: "button", disabled: data.page <= 1,
          onclick: () => { filters.page -= 1; load(); } }, "上一页"),
        h("button", { type: "button", disabled: data.page >= pages,
          onclick: () => { filters.page += 1; load(); } }, "下一页")));
  });
  const exportAll = guard(async () => {
    const rows = [["房屋", "楼栋", "单元", "房号", "业主", "手机号", "状态", "未交笔数", "未交金额（元）", "已交金额（元）"]];
    for (let page = 1; ; page += 1) {
      const data = await call("bills", "staff_houses", { ...query(), page, page_size: 100 });
      for (const i of data.items) {
        rows.push([i.house_label, i.building, i.unit, i.room, i.owner_name ?? "", i.owner_phone ?? "",
          i.status_name, i.unpaid_count, Number((i.unpaid_fen / 100).toFixed(2)),
          Number((i.paid_fen / 100).toFixed(2))]);
      }
      if (page * data.page_size >= data.total) break;
    }
    const name = `${community().name}-${filters.status === "unpaid" ? "未交" : "已交"}.xlsx`;
    download(name, new Blob([await xlsx(rows).arrayBuffer()],
      { type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" }));
  });
  const result = h("div", { id: "remind-result" });
  const remind = (houseIds) => guard(async () => {
    if (houseIds && houseIds.length === 0) { toast("请先勾选房屋", true); return; }
    const body = { community_id: state.community };
    if (houseIds) body.house_ids = houseIds;
    const r = await call("notify", "remind_unpaid", body);
    result.replaceChildren(h("div", { class: "card" },
      `未交 ${r.houses_unpaid} 户：本次已提醒 ${r.houses_reminded} 户，`
      + `本轮已提醒过 ${r.houses_skipped} 户，无人绑定 ${r.houses_unbound} 户；通知 ${r.accounts_notified} 个账号。`));
  });
  load();
  return h("div", {},
    h("div", { class: "card" },
      h("div", { class: "filters" }, Object.values(inputs),
        h("button", { class: "primary", type: "button", id: "f-search",
          onclick: () => { filters.page = 1; selected.clear(); load(); } }, "查询"),
        h("button", { type: "button", id: "export", onclick: exportAll }, "导出 .xlsx"),
        h("button", { type: "button", id: "remind-all", onclick: remind(null) }, "催缴全部未交"),
        h("button", { type: "button", id: "remind-selected", onclick: (e) => remind([...selected])(e) },
          "催缴所选")),
      tabs, table),
    result);
}

// ---- 报修 -----------------------------------------------------------------------------------

function repairsPage() {
  const filter = { status: "pending" };
  const tabs = h("div", { class: "tabs" });
  const list = h("div", {});
  const detail = h("div", { id: "repair-detail" });
  const STATUSES = [["pending", "待处理"], ["dispatched", "待上门"], ["awaiting_rating", "待评价"],
    ["completed", "已完成"], ["cancelled", "已取消"]];
  const load = guard(async () => {
    const data = await call("repair", "staff_list", { community_id: state.community, status: filter.status, page_size: 50 });
    tabs.replaceChildren(...STATUSES.map(([code, name]) => h("button", { type: "button",
      class: code === filter.status ? "on" : null, onclick: () => { filter.status = code; load(); } },
    `${name}（${data.counts[code]}）`)));
    list.replaceChildren(h("table", { id: "repairs" },
      h("thead", {}, h("tr", {}, h("th", {}, "房屋"), h("th", {}, "类别"), h("th", {}, "描述"),
        h("th", {}, "维修员"), h("th", {}, "状态"), h("th", {}, "报修时间"))),
      h("tbody", {}, data.items.map((r) => h("tr", { class: "click", onclick: () => open(r.repair_id) },
        h("td", {}, r.house_label), h("td", {}, r.category_name), h("td", {}, r.description),
        h("td", {}, r.repairman_name ?? "—"), h("td", {}, tag(r.status, r.status_name)),
        h("td", {}, when(r.created_at)))))));
  });
  const open = guard(async (repairId) => {
    const [r, men] = await Promise.all([
      call("repair", "detail", { repair_id: repairId }),
      call("repair", "repairmen", { community_id: state.community }),
    ]);
    const pick = h("select", { id: "repairman" }, men.items.map((m) =>
      h("option", { value: m.account_id, selected: r.repairman && r.repairman.account_id === m.account_id },
        `${m.name}（在办 ${m.open_repairs}）`)));
    const canDispatch = r.status === "pending" || r.status === "dispatched";
    detail.replaceChildren(h("div", { class: "card" },
      h("h3", {}, `${r.house_label} · ${r.category_name} · `, tag(r.status, r.status_name)),
      h("p", {}, r.description), h("p", { class: "note" }, `联系电话 ${r.contact_phone}`),
      h("div", { class: "photos" }, [...r.images, ...(r.completion ? r.completion.images || [] : [])]
        .filter((i) => i.url).map((i) => h("img", { src: i.url, alt: "报修照片" }))),
      canDispatch && h("div", { class: "filters" }, pick,
        h("button", { class: "primary", type: "button", id: "dispatch", onclick: guard(async () => {
          await call("repair", "dispatch", { repair_id: r.repair_id, repairman_id: pick.value });
          toast(r.status === "pending" ? "已派单" : "已改派");
          await load();
          await open(r.repair_id);
        }) }, r.status === "pending" ? "派单" : "改派")),
      h("ul", { class: "timeline" }, r.timeline.map((t) =>
        h("li", {}, `${when(t.at)} ${t.event_name}（${t.actor_role_name}）${t.note ? `：${t.note}` : ""}`)))));
  });
  load();
  return h("div", { class: "grid2" }, h("div", {}, tabs, list), detail);
}

// ---- 投诉 -----------------------------------------------------------------------------------

function complaintsPage() {
  const list = h("div", {});
  const load = guard(async () => {
    const data = await call("complaint", "staff_list", { community_id: state.community, page_size: 50 });
    list.replaceChildren(h("table", { id: "complaints" },
      h("thead", {}, h("tr", {}, h("th", {}, "房屋"), h("th", {}, "类型"), h("th", {}, "内容"),
        h("th", {}, "状态"), h("th", {}, "时间"), h("th", {}, "回复"))),
      h("tbody", {}, data.items.map((c) => {
        const text = h("input", { placeholder: "回复内容", "aria-label": "回复内容" });
        const status = h("select", {}, h("option", { value: "processing" }, "处理中"),
          h("option", { value: "resolved" }, "已解决"));
        return h("tr", {}, h("td", {}, c.house_label), h("td", {}, `${c.kind_name}·${c.type_name}`),
          h("td", {}, c.content), h("td", {}, tag(c.status, c.status_name)), h("td", {}, when(c.created_at)),
          h("td", {}, c.status === "resolved" ? `已回复 ${c.reply_count} 次` : h("div", { class: "filters" },
            text, status, h("button", { type: "button", onclick: guard(async () => {
              await call("complaint", "reply", { complaint_id: c.complaint_id, reply: text.value.trim(), status: status.value });
              toast("已回复");
              load();
            }) }, "回复"))));
      }))));
  });
  load();
  return list;
}

// ---- 公告 -----------------------------------------------------------------------------------

function noticesPage() {
  const title = h("input", { id: "notice-title", maxlength: 64, placeholder: "标题" });
  const content = h("textarea", { id: "notice-content", maxlength: 2000, placeholder: "内容" });
  const list = h("div", { id: "notices" });
  const load = guard(async () => {
    const data = await call("notify", "notices", { community_id: state.community, page_size: 50 });
    const items = data.groups.flatMap((g) => g.items);
    list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "标题"), h("th", {}, "发布时间"))),
      h("tbody", {}, items.map((n) => h("tr", {}, h("td", {}, n.title), h("td", {}, when(n.published_at)))))));
  });
  const requestId = () => crypto.getRandomValues(new Uint32Array(2)).join("-");
  let pending = requestId();
  load();
  return h("div", { class: "grid2" },
    h("div", { class: "card form" }, h("label", {}, "标题"), title, h("label", {}, "内容"), content,
      h("button", { class: "primary", type: "button", id: "publish", style: "margin-top:12px",
        onclick: guard(async () => {
          // The same request id on a retry, so a click that timed out never publishes twice.
          await call("notify", "publish_notice", { community_id: state.community,
            title: title.value.trim(), content: content.value.trim(), request_id: pending });
          pending = requestId();
          title.value = ""; content.value = "";
          toast("公告已发布");
          load();
        }) }, `发布到${community().name}`)),
    h("div", { class: "card" }, list));
}

// ---- 员工 -----------------------------------------------------------------------------------

function staffPage() {
  const list = h("div", {});
  const phone = h("input", { id: "staff-phone", placeholder: "手机号" });
  const name = h("input", { id: "staff-name", placeholder: "姓名" });
  const role = h("select", { id: "staff-role" }, h("option", { value: "repairman" }, "维修员"),
    h("option", { value: "guard" }, "门岗"), h("option", { value: "admin" }, "物业管理员"));
  const names = Object.fromEntries(state.me.staff.communities.map((c) => [c.community_id, c.name]));
  const load = guard(async () => {
    const data = await call("admin", "list_staff", { page_size: 100 });
    list.replaceChildren(h("table", { id: "staff" },
      h("thead", {}, h("tr", {}, h("th", {}, "姓名"), h("th", {}, "手机号"), h("th", {}, "角色"),
        h("th", {}, "负责小区"), h("th", {}, ""))),
      h("tbody", {}, data.items.map((s) => h("tr", {}, h("td", {}, s.name), h("td", {}, s.phone ?? "—"),
        h("td", {}, s.role_name),
        h("td", {}, s.all_communities ? "全部小区" : s.community_ids.map((id) => names[id] || id).join("、")),
        h("td", {}, s.account_id === state.me.account_id ? "" : h("button", { class: "danger", type: "button",
          onclick: guard(async () => {
            if (!confirm(`确定移除 ${s.name}？`)) return;
            await call("admin", "remove_staff", { account_id: s.account_id });
            toast("已移除");
            load();
          }) }, "移除")))))));
  });
  load();
  return h("div", {},
    h("div", { class: "card filters" }, phone, name, role,
      h("button", { class: "primary", type: "button", onclick: guard(async () => {
        await call("admin", "add_staff", { phone: phone.value.trim(), name: name.value.trim(),
          role: role.value, community_ids: [state.community] });
        toast(`已添加到${community().name}`);
        phone.value = ""; name.value = "";
        load();
      }) }, "添加到当前小区")),
    list);
}

// ---- 住户成员 -------------------------------------------------------------------------------

function membersPage() {
  const inputs = {
    building: h("input", { placeholder: "楼栋，如 1栋" }),
    unit: h("input", { placeholder: "单元" }),
    room: h("input", { placeholder: "房号" }),
  };
  const out = h("div", {});
  const show = guard(async (house) => {
    const data = await call("bind_house", "members", { house_id: house.house_id });
    const name = h("input", { placeholder: "姓名" });
    const phone = h("input", { placeholder: "手机号" });
    const role = h("select", {}, h("option", { value: "family" }, "家人"), h("option", { value: "tenant" }, "租户"));
    out.replaceChildren(h("div", { class: "card" }, h("h3", {}, house.house_label),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "姓名"), h("th", {}, "手机号"), h("th", {}, "身份"), h("th", {}, ""))),
        h("tbody", {}, data.items.map((m) => h("tr", {}, h("td", {}, m.name ?? "—"), h("td", {}, m.phone ?? "—"),
          h("td", {}, m.role_name), h("td", {}, m.role === "owner" ? "" : h("button", { class: "danger", type: "button",
            onclick: guard(async () => {
              await call("bind_house", "remove_member", { house_id: house.house_id, account_id: m.account_id });
              toast("已移除");
              show(house);
            }) }, "移除")))))),
      h("div", { class: "filters", style: "margin-top:12px" }, name, phone, role,
        h("button", { class: "primary", type: "button", onclick: guard(async () => {
          await call("bind_house", "add_member", { house_id: house.house_id, name: name.value.trim(),
            phone: phone.value.trim(), role: role.value });
          toast("已添加");
          show(house);
        }) }, "添加成员"))));
  });
  const find = guard(async () => {
    const q = { community_id: state.community, page_size: 20 };
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q[k] = el.value.trim();
    const data = await call("bills", "staff_houses", q);
    out.replaceChildren(h("table", {}, h("tbody", {}, data.items.map((house) =>
      h("tr", { class: "click", onclick: () => show(house) }, h("td", {}, house.house_label),
        h("td", {}, house.owner_name ?? "—"))))));
  });
  return h("div", {}, h("div", { class: "card filters" }, Object.values(inputs),
    h("button", { class: "primary", type: "button", onclick: find }, "查找房屋")), out);
}

// ---- start ----------------------------------------------------------------------------------

async function start() {
  try {
    const reply = await fetch("config.json", { cache: "no-store" });
    if (reply.ok) state.config = { functions: {}, ...(await reply.json()) };
  } catch { /* no config.json: the sandbox's /api/<fn> */ }
  window.addEventListener("hashchange", render);
  render();
}

start();
