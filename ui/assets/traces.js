// Trace search over the Jaeger API (service, operation, tags, durations, look-back) and one
// trace as a waterfall of spans, each expandable to its attributes, process and events.
import { el, fetchJSON, errorBox, loading, fill, select, setState, link, fmtDuration, fmtTime, table } from "./lib.js";

const LOOKBACKS = ["15m", "1h", "3h", "6h", "12h", "1d", "2d", "7d"];

export function render(view, r) {
  if (r.parts[1]) return renderTrace(view, r.parts[1]);
  const p = r.params;
  const state = {
    service: p.get("service") || "", operation: p.get("operation") || "", tags: p.get("tags") || "",
    minDuration: p.get("minDuration") || "", maxDuration: p.get("maxDuration") || "",
    lookback: p.get("lookback") || "1h", limit: p.get("limit") || "20",
  };
  const service = el("select", { id: "service" }, el("option", { value: "", text: "loading services…" }));
  const operation = el("select", { id: "operation" }, el("option", { value: "", text: "all operations" }));
  const tags = el("input", { id: "tags", type: "text", placeholder: 'tags (logfmt): http.status_code=500 error=true', value: state.tags, size: 36 });
  const minD = el("input", { id: "minDuration", type: "text", placeholder: "min e.g. 100ms", value: state.minDuration, size: 10 });
  const maxD = el("input", { id: "maxDuration", type: "text", placeholder: "max e.g. 2s", value: state.maxDuration, size: 10 });
  const lookback = select(LOOKBACKS, state.lookback, { id: "lookback" });
  const limit = el("input", { id: "limit", type: "number", min: 1, max: 1500, value: state.limit, style: "width:5em" });
  const form = el("form", { class: "query", onsubmit: (e) => { e.preventDefault(); search(); } },
    el("div", { class: "controls" }, service, operation, tags, minD, maxD, lookback, limit,
      el("button", { class: "primary", type: "submit", id: "run" }, "Find traces")));
  const note = el("div");
  const out = el("section", { id: "traces" });
  view.append(el("h1", { text: "Traces" }), form, note, out);

  const loadOperations = async () => {
    operation.replaceChildren(el("option", { value: "", text: "all operations" }));
    if (!service.value) return;
    try {
      const ops = (await fetchJSON(`jaeger/api/services/${encodeURIComponent(service.value)}/operations`)).data || [];
      operation.append(...ops.map((o) => el("option", { value: o, selected: o === state.operation, text: o })));
    } catch (e) {
      note.replaceChildren(errorBox("Cannot list operations", e));
    }
  };
  service.addEventListener("change", () => { state.operation = ""; loadOperations(); });

  fetchJSON("jaeger/api/services").then(async (body) => {
    const names = body.data || [];
    if (!names.length) {
      service.replaceChildren(el("option", { value: "", text: "no services yet" }));
      out.replaceChildren(el("div", { class: "muted", text: "No traces stored yet: send OTLP spans to this server." }));
      return;
    }
    service.replaceChildren(...names.map((n) => el("option", { value: n, selected: n === state.service, text: n })));
    await loadOperations();
    if (state.service) search();
  }).catch((e) => {
    service.replaceChildren(el("option", { value: "", text: "services unavailable" }));
    note.replaceChildren(errorBox("Cannot list services", e));
  });

  function search() {
    Object.assign(state, { service: service.value, operation: operation.value, tags: tags.value.trim(),
      minDuration: minD.value.trim(), maxDuration: maxD.value.trim(), lookback: lookback.value, limit: limit.value });
    setState("traces", state);
    fill(out, "Trace search failed", async () => {
      const params = { service: state.service, lookback: state.lookback, limit: state.limit };
      if (state.operation) params.operation = state.operation;
      if (state.minDuration) params.minDuration = state.minDuration;
      if (state.maxDuration) params.maxDuration = state.maxDuration;
      if (state.tags) params.tags = JSON.stringify(parseTags(state.tags));
      const endUs = Date.now() * 1000;
      params.end = endUs;
      const traces = (await fetchJSON("jaeger/api/traces", params)).data || [];
      if (!traces.length) return el("div", { class: "muted", id: "no-traces", text: "No traces match." });
      const summaries = traces.map(summary).sort((a, b) => b.start - a.start);
      const longest = Math.max(...summaries.map((s) => s.duration), 1);
      return [el("div", { class: "muted", id: "trace-count", text: `${summaries.length} traces` }),
        table(["Trace", "Spans", "Services", "Started", "Duration"], summaries.map((s) => [
          el("a", { class: "trace-link", href: link(`traces/${s.id}`) }, el("b", { text: s.root }), el("div", { class: "muted mono", text: s.id })),
          String(s.spans) + (s.errors ? ` (${s.errors} errors)` : ""),
          s.services.join(", "), fmtTime(s.start / 1000),
          el("div", { class: "durbar" }, el("span", { style: `width:${(100 * s.duration) / longest}%` }), fmtDuration(s.duration / 1e6)),
        ]), { id: "trace-table" })];
    });
  }
}

// "a=1 b=\"x y\"" -> {a: "1", b: "x y"}: the tag syntax of Jaeger's own search form.
export function parseTags(text) {
  const out = {};
  const rest = text.replace(/([^\s=]+)=("((?:[^"\\]|\\.)*)"|\S*)/g, (_, k, raw, quoted) => {
    out[k] = quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : raw;
    return "";
  });
  if (rest.trim()) throw new Error(`cannot read tags "${rest.trim()}": write key=value pairs separated by spaces`);
  return out;
}

function isError(span) {
  return (span.tags || []).some((t) => t.key === "error" && (t.value === true || t.value === "true"));
}

function summary(trace) {
  const spans = trace.spans || [];
  const ids = new Set(spans.map((s) => s.spanID));
  const roots = spans.filter((s) => !(s.references || []).some((r) => r.refType === "CHILD_OF" && ids.has(r.spanID)));
  const root = (roots.length ? roots : spans).reduce((a, b) => (b.startTime < a.startTime ? b : a), spans[0]);
  const start = Math.min(...spans.map((s) => s.startTime));
  const end = Math.max(...spans.map((s) => s.startTime + s.duration));
  const services = [...new Set(spans.map((s) => (trace.processes[s.processID] || {}).serviceName))].filter(Boolean).sort();
  const rootService = (trace.processes[root.processID] || {}).serviceName || "";
  return { id: trace.traceID, root: `${rootService}: ${root.operationName}`, spans: spans.length,
    errors: spans.filter(isError).length, services, start, duration: end - start };
}

function renderTrace(view, id) {
  const out = el("section", { id: "trace" });
  view.append(el("p", {}, el("a", { href: link("traces"), text: "← trace search" })), out);
  fill(out, `Cannot load trace ${id}`, async () => {
    const body = await fetchJSON(`jaeger/api/traces/${encodeURIComponent(id)}`);
    const trace = (body.data || [])[0];
    if (!trace || !(trace.spans || []).length) throw new Error(`trace ${id} not found`);
    return waterfall(trace);
  });
}

// Spans in tree order (children after their parent, by start time), with their depth.
function ordered(spans) {
  const byId = new Map(spans.map((s) => [s.spanID, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const parent = (s.references || []).find((r) => r.refType === "CHILD_OF" && byId.has(r.spanID));
    if (parent) (children.get(parent.spanID) || children.set(parent.spanID, []).get(parent.spanID)).push(s);
    else roots.push(s);
  }
  const out = [];
  const visit = (s, depth) => {
    out.push([s, depth]);
    for (const c of (children.get(s.spanID) || []).sort((a, b) => a.startTime - b.startTime)) visit(c, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.startTime - b.startTime)) visit(r, 0);
  return out;
}

function waterfall(trace) {
  const s = summary(trace);
  const rows = ordered(trace.spans);
  const pct = (us) => (100 * us) / Math.max(s.duration, 1);
  const head = el("div", { class: "trace-head" },
    el("h1", { text: s.root }),
    el("div", { class: "muted" }, `Trace ${trace.traceID} · ${s.spans} spans · ${s.services.length} services · started ${fmtTime(s.start / 1000)} · ${fmtDuration(s.duration / 1e6)}`));
  const ticks = el("div", { class: "wf-row wf-axis" }, el("div", { class: "wf-name" }, "Service: operation"),
    el("div", { class: "wf-lane" }, [0, 0.25, 0.5, 0.75, 1].map((f) => el("span", { class: "wf-tick", style: `left:${f * 100}%` }, fmtDuration((f * s.duration) / 1e6)))));
  const list = el("div", { class: "waterfall", id: "waterfall" }, ticks);
  for (const [span, depth] of rows) {
    const proc = trace.processes[span.processID] || { serviceName: "?", tags: [] };
    const err = isError(span);
    const row = el("div", { class: `wf-row span${err ? " err" : ""}`, "data-span-id": span.spanID },
      el("div", { class: "wf-name", style: `padding-left:${depth * 14 + 4}px`, title: `${proc.serviceName}: ${span.operationName}` },
        el("span", { class: "svc", text: proc.serviceName }), " ", span.operationName),
      el("div", { class: "wf-lane" },
        el("div", { class: "wf-bar", style: `left:${pct(span.startTime - s.start)}%;width:${Math.max(pct(span.duration), 0.3)}%` }),
        el("span", { class: "wf-dur", style: `left:${Math.min(pct(span.startTime - s.start + span.duration), 92)}%`, text: fmtDuration(span.duration / 1e6) })));
    let details = null;
    row.addEventListener("click", () => {
      if (details) { details.remove(); details = null; return; }
      details = spanDetails(span, proc, s.start);
      row.after(details);
    });
    list.append(row);
  }
  return [head, list];
}

function kv(items) {
  return table(["Key", "Value"], (items || []).map((t) => [t.key, typeof t.value === "string" ? t.value : JSON.stringify(t.value)]), { class: "kv" });
}

function spanDetails(span, proc, traceStart) {
  const logs = span.logs || [];
  return el("div", { class: "span-details" },
    el("div", { class: "muted" }, `Span ${span.spanID} · starts at +${fmtDuration((span.startTime - traceStart) / 1e6)} · ${fmtDuration(span.duration / 1e6)}`),
    el("h3", { text: "Attributes" }), kv(span.tags),
    el("h3", { text: `Process: ${proc.serviceName}` }), kv(proc.tags),
    logs.length ? [el("h3", { text: `Events (${logs.length})` }),
      logs.map((l) => el("div", { class: "event" }, el("b", { text: `+${fmtDuration((l.timestamp - traceStart) / 1e6)}` }), kv(l.fields)))] : null,
    span.warnings && span.warnings.length ? el("div", { class: "warning", text: span.warnings.join("; ") }) : null);
}
