// Status: build and runtime facts, stores (disk use, counts), remote_write queues, ingest rates from the server's
// own /metrics counters (rate = difference between two reads), and TSDB cardinality top-10s.
import { el, fill, fetchJSON, prom, table, fmtBytes, fmtNum, fmtDuration, fmtTime, errorBox } from "./lib.js";

// Ingest counters on /metrics and what each counts: [label, metric, label filter, unit].
// novamon_ingested_total counts what each path stored, by signal and protocol.
const INGEST = [
  ["Remote-write", "metrics", "remote_write", "samples"],
  ["OTLP/gRPC metrics", "metrics", "otlp_grpc", "samples"],
  ["OTLP/HTTP metrics", "metrics", "otlp_http", "samples"],
  ["Loki push", "logs", "loki_push", "log lines"],
  ["Fluentd forward", "logs", "forward", "log records"],
  ["OTLP/gRPC logs", "logs", "otlp_grpc", "log records"],
  ["OTLP/HTTP logs", "logs", "otlp_http", "log records"],
  ["OTLP/gRPC traces", "traces", "otlp_grpc", "spans"],
  ["OTLP/HTTP traces", "traces", "otlp_http", "spans"],
].map(([label, signal, protocol, unit]) => [label, "novamon_ingested_total", { signal, protocol }, unit]);
const POLL_MS = 5000;

export function render(view) {
  let started = null;
  const facts = el("section", { id: "facts" });
  const stores = el("section", { id: "stores" });
  const ingest = el("section", { id: "ingest" });
  const remoteWrite = el("section", { id: "remote-write" });
  const forward = el("section", { id: "forward" });
  const cardinality = el("section", { id: "cardinality" });
  view.append(el("h1", { text: "Status" }), facts,
    el("h2", { text: "Stores" }), stores,
    el("h2", { text: "Ingest" }), ingest,
    el("h2", { text: "Remote write" }), remoteWrite,
    el("h2", { text: "Forwarding (logs and traces)" }), forward,
    el("h2", { text: "TSDB cardinality (top 10)" }), cardinality);

  const uiStatus = prom("ui/api/status");
  uiStatus.catch(() => { /* each panel below shows the error */ });
  fill(facts, "Cannot load build and runtime information", async () => {
    const [build, runtime, ui] = await Promise.all([
      prom("api/v1/status/buildinfo"), prom("api/v1/status/runtimeinfo"), uiStatus]);
    started = Date.parse(runtime.startTime);
    return table(["", ""], [
      ["Version", `${build.version} (${build.revision || "no revision"})`],
      ["Started", fmtTime(started)],
      ["Uptime", el("span", { id: "uptime" }, fmtDuration((Date.now() - started) / 1000))],
      ["Data directory", ui.dataDir],
      ["Retention", runtime.storageRetention],
      ["Working directory", runtime.CWD],
    ], { class: "kv" });
  });
  fill(stores, "Cannot load store status", async () => {
    const ui = await uiStatus;
    return table(["Store", "Directory", "Disk use", "Contents"], ui.stores.map((s) => [
      s.name, el("code", { text: s.dir }),
      s.diskError ? el("span", { class: "error-text", text: s.diskError }) : el("span", { class: "num", "data-bytes": s.diskBytes }, fmtBytes(s.diskBytes)),
      s.counts.map((c) => el("div", { class: "count" }, `${c.what}: `,
        c.error ? el("span", { class: "error-text", text: c.error }) : el("b", { class: "num", "data-count": c.what, text: fmtNum(c.value) }))),
    ]), { id: "stores-table" });
  });
  fill(remoteWrite, "Cannot load remote write status", async () => {
    const ui = await uiStatus;
    if (!ui.remoteWrite.length) return el("div", { class: "muted", text: "No remote_write destinations." });
    return table(["Name", "URL", "Protocol", "Shards", "Sent", "Failed", "Retried", "Pending", "Backlog on disk", "Dropped (disk full)", "Newest sent", "Last error"],
      ui.remoteWrite.map((r) => [
        r.name, el("code", { text: r.url }), r.protocol, fmtNum(r.shards),
        el("span", { class: "num", "data-sent": r.name, text: fmtNum(r.samplesSent) }),
        fmtNum(r.samplesFailed), fmtNum(r.samplesRetried), fmtNum(r.samplesPending),
        fmtBytes(r.backlogBytes), fmtNum(r.samplesDroppedDiskFull),
        r.highestSentSeconds > 0 ? fmtTime(r.highestSentSeconds * 1000) : "—",
        r.lastError ? el("span", { class: "error-text", text: r.lastError }) : "—",
      ]), { id: "remote-write-table" });
  });
  fill(forward, "Cannot load forwarding status", async () => {
    const ui = await uiStatus;
    if (!ui.forward.length) return el("div", { class: "muted", text: "No forward destinations." });
    return table(["Name", "Signal", "URL", "Sent", "Failed", "Retried", "Pending", "Backlog on disk", "Dropped (disk full)", "Last error"],
      ui.forward.map((f) => [
        f.name, f.signal, el("code", { text: f.url }),
        el("span", { class: "num", "data-sent": `${f.signal}/${f.name}`, text: fmtNum(f.sent) }),
        fmtNum(f.failed), fmtNum(f.retried), fmtNum(f.pending),
        fmtBytes(f.backlogBytes), fmtNum(f.droppedDiskFull),
        f.lastError ? el("span", { class: "error-text", text: f.lastError }) : "—",
      ]), { id: "forward-table" });
  });
  fill(cardinality, "Cannot load TSDB status", async () => {
    const tsdb = await prom("api/v1/status/tsdb", { limit: 10 });
    const top = (title, rows, col, fmt = fmtNum) => el("div", { class: "card" }, el("h3", { text: title }),
      rows && rows.length ? table(["Name", col], rows.map((r) => [r.name, fmt(r.value)])) : el("div", { class: "muted", text: "no data" }));
    return [
      el("p", {}, `Series in the head: `, el("b", { id: "num-series", text: fmtNum(tsdb.headStats.numSeries) }),
        `, label pairs: ${fmtNum(tsdb.headStats.numLabelPairs)}, chunks: ${fmtNum(tsdb.headStats.chunkCount)}`),
      el("div", { class: "cards" },
        top("Series count by metric name", tsdb.seriesCountByMetricName, "Series"),
        top("Label value count by label name", tsdb.labelValueCountByLabelName, "Values"),
        top("Memory by label name", tsdb.memoryInBytesByLabelName, "Bytes", fmtBytes),
        top("Series count by label pair", tsdb.seriesCountByLabelValuePair, "Series")),
    ];
  });

  let previous = null;
  const poll = async () => {
    const uptime = document.getElementById("uptime");
    if (uptime && started) uptime.textContent = fmtDuration((Date.now() - started) / 1000);
    try {
      const now = { t: Date.now(), values: parseCounters(await metricsText()) };
      ingest.replaceChildren(ingestTable(now, previous));
      previous = now;
    } catch (e) {
      ingest.replaceChildren(errorBox("Cannot read ingest counters from /metrics", e));
    }
  };
  ingest.replaceChildren(el("div", { class: "muted", text: "loading…" }));
  // A first rate after a second, then a steadier one every few seconds.
  poll();
  const first = setTimeout(poll, 1000);
  const timer = setInterval(poll, POLL_MS);
  return () => { clearTimeout(first); clearInterval(timer); };
}

async function metricsText() {
  let resp;
  try {
    resp = await fetch("metrics");
  } catch (e) {
    throw new Error(`cannot reach novamon: ${e.message}`);
  }
  if (!resp.ok) throw new Error(`HTTP ${resp.status} from /metrics`);
  return resp.text();
}

// Parses the text exposition into [{name, labels, value}], enough for counters.
export function parseCounters(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: parseFloat(m[4]) });
  }
  return out;
}

function sum(values, metric, filter) {
  return values.filter((v) => v.name === metric && Object.entries(filter).every(([k, x]) => v.labels[k] === x))
    .reduce((a, v) => a + v.value, 0);
}

function ingestTable(now, previous) {
  const secs = previous ? (now.t - previous.t) / 1000 : 0;
  return table(["Protocol", "Since start", "Rate"], INGEST.map(([label, metric, filter, unit]) => {
    const total = sum(now.values, metric, filter);
    const rate = previous ? Math.max(0, total - sum(previous.values, metric, filter)) / secs : null;
    return [label, el("span", { "data-total": label }, `${fmtNum(total)} ${unit}`),
      rate === null ? el("span", { class: "muted", text: "measuring…" }) : `${fmtNum(rate)} ${unit}/s`];
  }), { id: "ingest-table" });
}
