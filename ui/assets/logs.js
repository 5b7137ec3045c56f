// Logs explorer: LogQL over a range (newest first) with a volume histogram from
// count_over_time, lines that expand to their labels and parsed fields (JSON or logfmt), trace
// ids linked to the trace view, and live tail over Loki's websocket.
import { el, prom, errorBox, loading, parseDuration, RANGES, select, setState, link, fmtNum, labelsText, TRACE_ID } from "./lib.js";
import { lineGraph } from "./graph.js";

const MAX_TAIL_LINES = 1000;
const TRACE_KEYS = /^(trace_?id|traceid|trace\.id)$/i;

export function render(view, r) {
  const p = r.params;
  const state = { q: p.get("q") || "", range: p.get("range") || "1h", limit: p.get("limit") || "500" };
  const expr = el("input", { id: "logql", type: "text", spellcheck: "false", placeholder: 'LogQL, e.g. {app="shop"} |= "error"', value: state.q });
  const range = select(RANGES, state.range, { id: "range" });
  const limit = select(["100", "500", "1000", "5000"], state.limit, { id: "limit", title: "Most lines to show" });
  const tail = el("button", { id: "tail", type: "button" }, "Live tail");
  const form = el("form", { class: "query", onsubmit: (e) => { e.preventDefault(); execute(); } },
    el("div", { class: "controls" }, expr, range, limit, el("button", { class: "primary", type: "submit", id: "run" }, "Run query"), tail));
  const volume = el("section", { id: "volume" });
  const out = el("section", { id: "lines" });
  view.append(el("h1", { text: "Logs" }), form, volume, out);

  let socket = null;
  const stopTail = () => {
    if (socket) { socket.onclose = null; socket.close(); socket = null; }
    tail.textContent = "Live tail";
    tail.classList.remove("active");
  };
  tail.addEventListener("click", () => (socket ? stopTail() : startTail()));

  function execute() {
    stopTail();
    state.q = expr.value.trim();
    state.range = range.value;
    state.limit = limit.value;
    setState("logs", state);
    if (!state.q) { volume.replaceChildren(); out.replaceChildren(el("div", { class: "muted", text: "Enter a LogQL query, e.g. {job=\"varlogs\"}." })); return; }
    const len = parseDuration(state.range) || 3600;
    const endS = Math.floor(Date.now() / 1000) + 1;
    const startS = endS - len;
    const step = Math.max(1, Math.ceil(len / 120));
    out.replaceChildren(loading());
    volume.replaceChildren();
    prom("loki/api/v1/query_range", { query: state.q, start: `${startS}000000000`, end: `${endS}000000000`, limit: state.limit, direction: "backward", step: `${step}s` })
      .then((data) => {
        if (data.resultType === "streams") {
          showLines(data.result);
          showVolume(startS, endS, step);
        } else if (data.resultType === "matrix") {
          const lines = data.result.map((x) => ({ name: labelsText(x.metric), points: x.values.map(([t, v]) => [t, parseFloat(v)]) }));
          out.replaceChildren(el("div", { class: "muted", id: "series-count", text: `${lines.length} series` }), lineGraph(lines, { start: startS, end: endS, step }));
        } else {
          out.replaceChildren(el("pre", { text: JSON.stringify(data.result, null, 2) }));
        }
      })
      .catch((e) => out.replaceChildren(errorBox("Query failed", e)));
  }

  function showVolume(startS, endS, step) {
    const q = `sum(count_over_time(${state.q} [${step}s]))`;
    prom("loki/api/v1/query_range", { query: q, start: `${startS}000000000`, end: `${endS}000000000`, step: `${step}s` })
      .then((data) => {
        const pts = (data.result[0] || { values: [] }).values.map(([t, v]) => [t, parseFloat(v)]);
        const total = pts.reduce((a, x) => a + x[1], 0);
        volume.replaceChildren(el("div", { class: "muted", id: "volume-total", "data-total": total, text: `${fmtNum(total)} lines in range` }),
          lineGraph([{ name: "lines", points: pts }], { start: startS, end: endS, step, bars: true, height: 130 }));
      })
      .catch((e) => volume.replaceChildren(errorBox("Volume histogram unavailable", e)));
  }

  function showLines(streams) {
    const entries = streams.flatMap((s) => s.values.map(([ts, line]) => ({ ts, line, labels: s.stream })));
    entries.sort((a, b) => (BigInt(b.ts) > BigInt(a.ts) ? 1 : -1));
    const list = el("div", { class: "loglines", id: "loglines" }, entries.map(lineRow));
    out.replaceChildren(el("div", { class: "muted", id: "line-count", text: `${entries.length} lines` }),
      entries.length ? list : el("div", { class: "muted", text: "No line matches in this range." }));
  }

  function startTail() {
    state.q = expr.value.trim();
    if (!state.q) return;
    setState("logs", state);
    volume.replaceChildren();
    const list = el("div", { class: "loglines", id: "loglines" });
    const counter = el("div", { class: "muted", id: "line-count", text: "tailing: waiting for lines…" });
    out.replaceChildren(counter, list);
    const url = new URL(`loki/api/v1/tail?${new URLSearchParams({ query: state.q, limit: 100 })}`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    socket = new WebSocket(url);
    tail.textContent = "Stop tail";
    tail.classList.add("active");
    let n = 0;
    socket.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      const entries = (frame.streams || []).flatMap((s) => s.values.map(([ts, line]) => ({ ts, line, labels: s.stream })));
      entries.sort((a, b) => (BigInt(b.ts) > BigInt(a.ts) ? 1 : -1));
      list.prepend(...entries.map(lineRow));
      while (list.children.length > MAX_TAIL_LINES) list.lastChild.remove();
      n += entries.length;
      counter.textContent = `tailing: ${n} lines received`;
    };
    socket.onclose = (ev) => {
      socket = null;
      stopTail();
      out.prepend(errorBox("Live tail stopped", new Error(ev.reason || `the server closed the connection (code ${ev.code}); check the query is a log query`)));
    };
  }

  execute();
  return stopTail;
}

function lineRow(e) {
  const ms = Number(BigInt(e.ts) / 1000000n);
  const fields = parseFields(e.line);
  const row = el("div", { class: "logline" },
    el("span", { class: "ts", text: new Date(ms).toISOString().replace("T", " ").replace("Z", "") }),
    el("span", { class: "text" }, linkTraceIds(e.line)));
  let details = null;
  row.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    if (details) { details.remove(); details = null; row.classList.remove("open"); return; }
    row.classList.add("open");
    const rows = [
      ...Object.entries(e.labels).map(([k, v]) => ["label", k, v]),
      ...Object.entries(fields).map(([k, v]) => ["field", k, v]),
    ];
    details = el("table", { class: "fields" }, rows.map(([kind, k, v]) => el("tr", {},
      el("td", { class: "muted", text: kind }), el("td", { text: k }),
      el("td", {}, TRACE_KEYS.test(k) && TRACE_ID.test(v) ? traceLink(v) : String(v)))));
    row.after(details);
  });
  return row;
}

// Fields of a JSON object line (top level, nested objects flattened with "_") or a logfmt line.
export function parseFields(line) {
  const out = {};
  const t = line.trim();
  if (t.startsWith("{")) {
    try {
      const flat = (o, pre) => {
        for (const [k, v] of Object.entries(o)) {
          if (v && typeof v === "object" && !Array.isArray(v)) flat(v, `${pre}${k}_`);
          else out[pre + k] = typeof v === "string" ? v : JSON.stringify(v);
        }
      };
      flat(JSON.parse(t), "");
      return out;
    } catch { /* not JSON: try logfmt */ }
  }
  for (const m of t.matchAll(/([a-zA-Z_][\w.\-]*)=("((?:[^"\\]|\\.)*)"|\S*)/g)) {
    out[m[1]] = m[3] !== undefined ? m[3].replace(/\\(.)/g, "$1") : m[2];
  }
  return out;
}

function traceLink(id) {
  return el("a", { class: "trace-link", href: link(`traces/${id.toLowerCase()}`), title: "Open this trace" }, id);
}

// The line as text, with each trace id that follows a trace-id key turned into a link.
function linkTraceIds(line) {
  const re = /(trace_?id|traceid|trace\.id)("?\s*[:=]\s*"?)([0-9a-fA-F]{32}|[0-9a-fA-F]{16})\b/gi;
  const parts = [];
  let last = 0;
  for (const m of line.matchAll(re)) {
    const at = m.index + m[1].length + m[2].length;
    parts.push(line.slice(last, at), traceLink(m[3]));
    last = at + m[3].length;
  }
  parts.push(line.slice(last));
  return parts;
}
