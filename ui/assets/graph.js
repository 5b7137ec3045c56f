// A small SVG line chart: one path per series, nice axis ticks, a legend and a hover readout.
// Series are [{name, points: [[tSeconds, value], ...]}]; a gap longer than 1.5 steps breaks
// the line, as Prometheus's graph does.
import { el, fmtNum } from "./lib.js";

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const W = 900, L = 60, R = 10, T = 10, B = 24;

function s(tag, attrs, ...children) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  for (const c of children) n.append(c);
  return n;
}

export function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return { lo: Math.min(lo, ticks[0]), hi: Math.max(hi, ticks[ticks.length - 1]), ticks };
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  const hm = d.toISOString().slice(11, 16);
  return span > 2 * 86400 ? `${d.toISOString().slice(5, 10)} ${hm}` : span < 600 ? d.toISOString().slice(11, 19) : hm;
}

export function lineGraph(series, { start, end, step, bars = false, height = 300 }) {
  const H = height;
  const values = series.flatMap((x) => x.points.map((p) => p[1]).filter(isFinite));
  const lo = values.length ? Math.min(...values) : 0;
  // Bars grow from zero, so their axis always includes it.
  const y = niceTicks(bars ? Math.min(0, lo) : lo, values.length ? Math.max(...values) : 1, height < 200 ? 3 : 5);
  const px = (t) => L + ((t - start) / Math.max(end - start, 1e-9)) * (W - L - R);
  const py = (v) => T + (1 - (v - y.lo) / (y.hi - y.lo)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "graph", role: "img" });
  for (const v of y.ticks) {
    svg.append(s("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), class: "grid" }),
      s("text", { x: L - 6, y: py(v) + 4, "text-anchor": "end", class: "tick" }, fmtNum(v)));
  }
  const span = end - start;
  const xStep = niceTicks(0, span, 6).ticks[1] || span;
  for (let t = Math.ceil(start / xStep) * xStep; t <= end; t += xStep) {
    svg.append(s("line", { x1: px(t), x2: px(t), y1: T, y2: H - B, class: "grid" }),
      s("text", { x: px(t), y: H - 6, "text-anchor": px(t) > W - R - 30 ? "end" : "middle", class: "tick" }, timeLabel(t, span)));
  }
  series.forEach((x, i) => {
    const color = COLORS[i % COLORS.length];
    if (bars) {
      const w = Math.max(1, ((W - L - R) * step) / Math.max(span, 1) - 1);
      const g = s("g", { class: "series", fill: color, "data-name": x.name });
      for (const [t, v] of x.points) g.append(s("rect", { x: px(t) - w / 2, y: py(Math.max(v, 0)), width: w, height: Math.abs(py(0) - py(v)) }));
      svg.append(g);
      return;
    }
    let d = "", prev = null;
    for (const [t, v] of x.points) {
      if (!isFinite(v)) { prev = null; continue; }
      d += `${prev === null || t - prev > step * 1.5 ? "M" : "L"}${px(t).toFixed(1)},${py(v).toFixed(1)}`;
      prev = t;
    }
    const path = s("path", { d, stroke: color, class: "series", "data-name": x.name });
    // A lone point has no segment to stroke: draw it as a dot.
    if (x.points.length === 1) path.setAttribute("stroke-linecap", "round");
    svg.append(path);
  });
  const cursor = s("line", { y1: T, y2: H - B, class: "cursor", visibility: "hidden" });
  svg.append(cursor);

  const readout = el("div", { class: "readout muted" }, "hover the graph to read values");
  svg.addEventListener("mousemove", (ev) => {
    const r = svg.getBoundingClientRect();
    const t = start + ((ev.clientX - r.left) * (W / r.width) - L) / (W - L - R) * span;
    if (t < start || t > end) return;
    const at = Math.round((t - start) / step) * step + start;
    cursor.setAttribute("x1", px(at)); cursor.setAttribute("x2", px(at)); cursor.setAttribute("visibility", "visible");
    const rows = series.map((x, i) => [x, x.points.find((p) => Math.abs(p[0] - at) < step / 2), i]).filter(([, p]) => p);
    readout.replaceChildren(el("b", { text: new Date(at * 1000).toISOString() }),
      ...rows.slice(0, 10).map(([x, p, i]) => el("div", {}, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), `${fmtNum(p[1])}  ${x.name}`)));
  });
  svg.addEventListener("mouseleave", () => cursor.setAttribute("visibility", "hidden"));

  const legend = el("ul", { class: "legend" }, series.map((x, i) =>
    el("li", {}, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), x.name)));
  return el("div", { class: "graph-box" }, svg, readout, series.length > 1 || !bars ? legend : null);
}
