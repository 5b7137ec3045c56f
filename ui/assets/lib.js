// Shared helpers: DOM building, API calls that turn every failure into a readable Error,
// formatting, and the page state kept in the URL hash (so every view is a shareable link).

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

// Fetches JSON and returns the body; throws an Error whose message a person can act on,
// whatever the API's error shape (Prometheus envelope, Jaeger's errors list, Loki's text).
export async function fetchJSON(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  return request(url, { headers: { Accept: "application/json" } });
}

// POSTs `body` as JSON; the answer and its failures as fetchJSON's.
export async function postJSON(path, body) {
  return request(path, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function request(url, init) {
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new Error(`cannot reach novamon (${url}): ${e.message}`);
  }
  const text = await resp.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    if (!resp.ok) throw httpError(resp, url, text.trim() || resp.statusText);
    throw new Error(`${url}: the answer is not JSON`);
  }
  if (body && body.status === "error") throw httpError(resp, url, `${body.errorType}: ${body.error}`);
  if (body && Array.isArray(body.errors) && body.errors.length) {
    throw httpError(resp, url, body.errors.map((e) => e.msg).join("; "));
  }
  if (!resp.ok) throw httpError(resp, url, (body && (body.error || body.message)) || resp.statusText);
  return body;
}

function httpError(resp, url, msg) {
  const e = new Error(`${msg} (HTTP ${resp.status} from ${url.split("?")[0]})`);
  e.status = resp.status;
  return e;
}

// A Prometheus-style API call: the `data` of a success envelope.
export async function prom(path, params) {
  return (await fetchJSON(path, params)).data;
}

export function errorBox(what, err) {
  return el("div", { class: "error", role: "alert" }, el("b", { text: `${what}: ` }), err.message || String(err));
}

export function loading(text = "loading…") {
  return el("div", { class: "muted" }, text);
}

// Replaces a container's children with what `work` returns, or with its error.
export async function fill(container, what, work) {
  container.replaceChildren(loading());
  try {
    container.replaceChildren(...[await work()].flat().filter(Boolean));
  } catch (e) {
    container.replaceChildren(errorBox(what, e));
  }
}

export function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtNum(v) {
  if (typeof v !== "number" || !isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e15 || a < 1e-3)) return v.toExponential(2);
  return Number.isInteger(v) ? v.toLocaleString("en-US") : v.toLocaleString("en-US", { maximumFractionDigits: 3 });
}

export function fmtDuration(seconds) {
  if (seconds < 1e-3) return `${Math.round(seconds * 1e6)}µs`;
  if (seconds < 1) return `${+(seconds * 1e3).toFixed(2)}ms`;
  if (seconds < 60) return `${+seconds.toFixed(2)}s`;
  const parts = [];
  let s = Math.floor(seconds);
  for (const [unit, len] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    if (s >= len) { parts.push(`${Math.floor(s / len)}${unit}`); s %= len; }
  }
  return parts.slice(0, 2).join(" ");
}

export function fmtTime(ms) {
  const d = new Date(ms);
  return isNaN(d) ? "–" : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// Go/Prometheus durations as the range pickers use them: 5m, 1h, 2d, 1w.
export function parseDuration(s) {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(String(s).trim());
  if (!m) return null;
  return +m[1] * { ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2]];
}

export const RANGES = ["5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d", "2d", "7d"];

// Page state lives in the hash: #/page?key=value...
export function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const q = h.indexOf("?");
  const path = q < 0 ? h : h.slice(0, q);
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(q < 0 ? "" : h.slice(q + 1)) };
}

export function link(path, params) {
  const qs = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== undefined && v !== null)).toString() : "";
  return `#/${path}${qs ? "?" + qs : ""}`;
}

// Records state without re-rendering (replaceState does not fire hashchange).
export function setState(path, params) {
  history.replaceState(null, "", link(path, params));
}

export function select(options, value, attrs = {}) {
  return el("select", attrs, options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return el("option", { value: v, selected: v === value }, label);
  }));
}

export function labelsText(labels, skipName) {
  const entries = Object.entries(labels || {}).filter(([k]) => !(skipName && k === "__name__"));
  const body = entries.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  const name = skipName ? labels.__name__ || "" : "";
  return `${name}{${body}}`;
}

export const TRACE_ID = /^[0-9a-f]{16}$|^[0-9a-f]{32}$/i;
