// Metrics explorer: a PromQL input with completion of metric names, label names and functions;
// a table (instant query) or a graph (range query). All state is in the URL hash.
import { el, prom, errorBox, loading, fmtNum, fmtTime, parseDuration, RANGES, select, setState, labelsText, table } from "./lib.js";
import { lineGraph } from "./graph.js";

const FUNCTIONS = ["sum", "avg", "min", "max", "count", "count_values", "group", "stddev", "stdvar", "topk", "bottomk",
  "quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
  "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "resets", "changes",
  "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
  "quantile_over_time", "stddev_over_time", "present_over_time", "absent", "absent_over_time",
  "histogram_quantile", "histogram_count", "histogram_sum", "histogram_fraction", "label_replace", "label_join",
  "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "exp", "ln", "log2", "log10", "sqrt",
  "scalar", "vector", "sort", "sort_desc", "sort_by_label", "time", "timestamp", "day_of_week", "hour"];
const MAX_SUGGESTIONS = 12;
const MAX_ROWS = 2000;

export function render(view, r) {
  const p = r.params;
  const state = {
    q: p.get("q") || "",
    range: p.get("range") || "1h",
    end: p.get("end") || "",
    step: p.get("step") || "",
    tab: p.get("tab") === "table" ? "table" : "graph",
  };
  const expr = el("textarea", { id: "expr", rows: 2, spellcheck: "false", placeholder: "PromQL expression, e.g. rate(http_requests_total[5m])", autocomplete: "off" });
  expr.value = state.q;
  const suggest = el("ul", { class: "suggest", id: "suggest", hidden: true });
  const names = { metrics: [], labels: [] };
  const namesNote = el("div", { class: "note" });
  // A range from a link (e.g. Prometheus's g0.range_input) that the list lacks is kept.
  const ranges = RANGES.includes(state.range) || !parseDuration(state.range) ? RANGES : [...RANGES, state.range];
  const range = select(ranges, state.range, { id: "range", title: "Range of the graph" });
  const end = el("input", { id: "end", type: "text", placeholder: "end: now", value: state.end ? fmtTime(state.end * 1000) : "", size: 20, title: "End time (UTC, e.g. 2026-01-02 15:04:05Z); empty for now" });
  const step = el("input", { id: "step", type: "text", placeholder: "step: auto", value: state.step, size: 8 });
  const run = el("button", { id: "run", class: "primary", type: "submit" }, "Execute");
  const tabs = el("div", { class: "tabs" },
    ["graph", "table"].map((t) => el("button", { type: "button", class: t === state.tab ? "tab active" : "tab", "data-tab": t, onclick: () => { state.tab = t; execute(); } }, t === "graph" ? "Graph" : "Table")));
  const out = el("section", { id: "result" });
  const form = el("form", { class: "query", onsubmit: (e) => { e.preventDefault(); execute(); } },
    el("div", { class: "expr-box" }, expr, suggest), el("div", { class: "controls" }, range, end, step, run));
  view.append(el("h1", { text: "Metrics" }), form, namesNote, tabs, out);

  Promise.all([prom("api/v1/label/__name__/values"), prom("api/v1/labels")])
    .then(([m, l]) => { names.metrics = m; names.labels = l; })
    .catch((e) => namesNote.replaceChildren(errorBox("Completion unavailable", e)));

  let active = -1, items = [];
  const close = () => { suggest.hidden = true; active = -1; items = []; };
  const word = () => {
    const before = expr.value.slice(0, expr.selectionStart);
    const m = /[a-zA-Z_:][a-zA-Z0-9_:]*$/.exec(before);
    const inBraces = (before.match(/{/g) || []).length > (before.match(/}/g) || []).length;
    return { text: m ? m[0] : "", start: m ? m.index : before.length, inBraces };
  };
  const complete = () => {
    const w = word();
    if (!w.text) return close();
    const pool = w.inBraces ? names.labels : [...names.metrics, ...FUNCTIONS];
    const lower = w.text.toLowerCase();
    const starts = pool.filter((n) => n.toLowerCase().startsWith(lower) && n !== w.text);
    const contains = pool.filter((n) => !n.toLowerCase().startsWith(lower) && n.toLowerCase().includes(lower));
    items = [...new Set([...starts, ...contains])].slice(0, MAX_SUGGESTIONS);
    if (!items.length) return close();
    active = 0;
    suggest.replaceChildren(...items.map((n, i) => el("li", { class: i === 0 ? "active" : "", "data-kind": FUNCTIONS.includes(n) ? "function" : w.inBraces ? "label" : "metric", onmousedown: (e) => { e.preventDefault(); accept(n); } }, n)));
    suggest.hidden = false;
  };
  const accept = (n) => {
    const w = word();
    const caret = expr.selectionStart;
    expr.value = expr.value.slice(0, w.start) + n + expr.value.slice(caret);
    expr.selectionStart = expr.selectionEnd = w.start + n.length;
    close();
    expr.focus();
  };
  expr.addEventListener("input", complete);
  expr.addEventListener("blur", () => setTimeout(close, 100));
  expr.addEventListener("keydown", (e) => {
    if (!suggest.hidden && items.length) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
        [...suggest.children].forEach((li, i) => li.classList.toggle("active", i === active));
        return;
      }
      if (e.key === "Tab" || e.key === "Enter") { e.preventDefault(); accept(items[active]); return; }
      if (e.key === "Escape") { close(); return; }
    }
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); execute(); }
  });

  function execute() {
    state.q = expr.value.trim();
    state.range = range.value;
    state.step = step.value.trim();
    state.end = "";
    if (end.value.trim()) {
      const t = Date.parse(end.value.trim().replace(" ", "T"));
      if (isNaN(t)) { out.replaceChildren(errorBox("Bad end time", new Error(`cannot read "${end.value}" as a time; use e.g. 2026-01-02 15:04:05Z`))); return; }
      state.end = String(Math.floor(t / 1000));
    }
    for (const b of tabs.children) b.classList.toggle("active", b.dataset.tab === state.tab);
    setState("metrics", state);
    if (!state.q) { out.replaceChildren(el("div", { class: "muted", text: "Enter an expression and press Execute." })); return; }
    out.replaceChildren(loading());
    (state.tab === "graph" ? graph() : instant()).catch((e) => out.replaceChildren(errorBox("Query failed", e)));
  }

  async function graph() {
    const len = parseDuration(state.range) || 3600;
    const endT = state.end ? +state.end : Math.floor(Date.now() / 1000);
    const start = endT - len;
    let st = parseDuration(state.step);
    if (state.step && !st) throw new Error(`cannot read step "${state.step}"; use e.g. 15s or 1m`);
    st = st || Math.max(1, Math.ceil(len / 250));
    const data = await prom("api/v1/query_range", { query: state.q, start, end: endT, step: st });
    const series = data.resultType === "matrix" ? data.result : [];
    const warnings = (data.warnings || []).map((w) => el("div", { class: "warning", text: w }));
    if (!series.length) { out.replaceChildren(...warnings, el("div", { class: "muted", id: "empty", text: "No data in this range." })); return; }
    const lines = series.map((x) => ({ name: labelsText(x.metric, true), points: x.values.map(([t, v]) => [t, parseFloat(v)]) }));
    out.replaceChildren(...warnings, el("div", { class: "muted", id: "series-count", text: `${lines.length} series, step ${st}s` }), lineGraph(lines, { start, end: endT, step: st }));
  }

  async function instant() {
    const params = { query: state.q };
    if (state.end) params.time = state.end;
    const data = await prom("api/v1/query", params);
    let rows;
    if (data.resultType === "vector") rows = data.result.map((x) => [labelsText(x.metric, true), x.value ? fmtNum(parseFloat(x.value[1])) : `${x.histogram ? "histogram" : ""}`]);
    else if (data.resultType === "matrix") rows = data.result.map((x) => [labelsText(x.metric, true), x.values.map(([t, v]) => `${v} @${t}`).join("\n")]);
    else rows = [[data.resultType, String(data.result[1])]];
    const warnings = (data.warnings || []).map((w) => el("div", { class: "warning", text: w }));
    // Tens of thousands of rows would freeze the tab; a person reads the first ones.
    if (rows.length > MAX_ROWS) warnings.push(el("div", { class: "warning", text: `showing the first ${MAX_ROWS} of ${rows.length} results` }));
    out.replaceChildren(...warnings, el("div", { class: "muted", id: "series-count", text: `${rows.length} result${rows.length === 1 ? "" : "s"}` }),
      rows.length ? table(["Series", "Value"], rows.slice(0, MAX_ROWS), { id: "result-table" }) : el("div", { class: "muted", text: "Empty result." }));
  }

  execute();
}
