// SQL over the metrics, logs and spans tables (POST api/v1/sql): a query box, the rows as a
// table, and a line chart when the answer has a time column and a numeric column (a line
// per value of its first text column, if it has one; a line per numeric column otherwise).
// The query is in the URL hash.
import { el, errorBox, loading, fmtNum, fmtTime, postJSON, setState, table } from "./lib.js";
import { lineGraph } from "./graph.js";

const MAX_ROWS = 2000;
const MAX_LINES = 20;
const EXAMPLE = "SELECT date_bin(interval '1 minute', ts) AS t, level, count(*) AS n FROM logs WHERE ts > now() - interval '1 hour' GROUP BY 1, 2 ORDER BY 1";

export function render(view, r) {
  const box = el("textarea", { id: "sql", rows: 4, spellcheck: "false", autocomplete: "off", placeholder: `SQL, e.g. ${EXAMPLE}` });
  box.value = r.params.get("q") || "";
  const run = el("button", { id: "run", class: "primary", type: "submit" }, "Run");
  const out = el("section", { id: "result" });
  const form = el("form", { class: "query", onsubmit: (e) => { e.preventDefault(); execute(); } },
    el("div", { class: "expr-box" }, box),
    el("div", { class: "controls" }, el("span", { class: "muted", text: "Tables: metrics, logs, spans. Ctrl+Enter runs." }), run));
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); execute(); }
  });
  view.append(el("h1", { text: "SQL" }), form, out);

  async function execute() {
    const q = box.value.trim();
    setState("sql", { q });
    if (!q) { out.replaceChildren(el("div", { class: "muted", text: "Enter a query and press Run." })); return; }
    out.replaceChildren(loading());
    try {
      show(await postJSON("api/v1/sql", { query: q }));
    } catch (e) {
      out.replaceChildren(errorBox("Query failed", e));
    }
  }

  function show({ columns, rows }) {
    const names = columns.map((c) => c.name);
    const shown = rows.slice(0, MAX_ROWS).map((row) => row.map(cell));
    // Tens of thousands of rows would freeze the tab; a person reads the first ones.
    const note = rows.length > MAX_ROWS ? el("div", { class: "warning", text: `showing the first ${MAX_ROWS} of ${rows.length} rows` }) : null;
    out.replaceChildren(
      el("div", { class: "muted", id: "row-count", text: `${rows.length} row${rows.length === 1 ? "" : "s"}` }),
      note, chart(columns, rows),
      rows.length ? table(names, shown, { id: "result-table" }) : el("div", { class: "muted", text: "No rows." }));
  }

  if (box.value.trim()) execute();
}

// A value as the table shows it: numbers grouped, maps and lists as JSON, NULL as empty.
function cell(v) {
  if (v === null) return "";
  if (typeof v === "number") return fmtNum(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

const isTime = (c) => /^(Timestamp|Date)/.test(c.type);
const isNumber = (c) => /^(U?Int|Float|Decimal)/.test(c.type);

// The line chart of an answer with a time column and a numeric one, else null.
export function chart(columns, rows) {
  const t = columns.findIndex(isTime);
  const nums = columns.map((c, i) => [c, i]).filter(([c, i]) => i !== t && isNumber(c)).map(([, i]) => i);
  if (t < 0 || !nums.length) return null;
  const text = columns.findIndex((c, i) => i !== t && /^(Utf8|LargeUtf8|Utf8View)$/.test(c.type));
  const lines = new Map();
  for (const row of rows) {
    const at = Date.parse(row[t]) / 1000;
    if (!isFinite(at)) continue;
    const names = text < 0 ? nums.map((i) => [columns[i].name, i]) : [[String(row[text] ?? ""), nums[0]]];
    for (const [name, i] of names) {
      const v = typeof row[i] === "number" ? row[i] : parseFloat(row[i]);
      if (!lines.has(name)) lines.set(name, []);
      lines.get(name).push([at, v]);
    }
  }
  const series = [...lines].slice(0, MAX_LINES).map(([name, points]) => ({ name, points: points.sort((a, b) => a[0] - b[0]) }));
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  if (!times.length) return null;
  // The step is the closest two times: lines break only where a bucket is missing.
  let step = Infinity;
  for (let i = 1; i < times.length; i++) step = Math.min(step, times[i] - times[i - 1]);
  if (!isFinite(step)) step = 1;
  const start = times[0], end = times[times.length - 1];
  return el("div", { id: "sql-chart" },
    el("div", { class: "muted", text: `${series.length} line${series.length === 1 ? "" : "s"} over ${columns[t].name}, ${fmtTime(start * 1000)} to ${fmtTime(end * 1000)}` }),
    lineGraph(series, { start, end: Math.max(end, start + step), step }));
}
