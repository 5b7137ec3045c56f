// Rules and alerts in Prometheus's API shapes (/api/v1/rules, /api/v1/alerts), and silences
// from the Alertmanager v2 API when this server answers it (the section is hidden otherwise).
import { el, fetchJSON, prom, fill, table, fmtTime, fmtDuration, fmtNum, labelsText } from "./lib.js";

export function render(view) {
  const alerts = el("section", { id: "alerts" });
  const rules = el("section", { id: "rules" });
  const silences = el("section", { id: "silences", hidden: true });
  view.append(el("h1", { text: "Rules & alerts" }), el("h2", { text: "Active alerts" }), alerts,
    el("h2", { text: "Rule groups" }), rules, silences);

  fill(alerts, "Cannot load alerts", async () => {
    const data = await prom("api/v1/alerts").catch(notServed);
    const list = data.alerts || [];
    if (!list.length) return el("div", { class: "muted", id: "no-alerts", text: "No alert is pending or firing." });
    const order = { firing: 0, pending: 1 };
    list.sort((a, b) => (order[a.state] ?? 2) - (order[b.state] ?? 2) || (a.activeAt < b.activeAt ? 1 : -1));
    return table(["State", "Alert", "Labels", "Annotations", "Active since", "Value"], list.map((a) => [
      badge(a.state), a.labels.alertname || "", labelList(a.labels), annotationList(a.annotations),
      a.activeAt ? fmtTime(Date.parse(a.activeAt)) : "–", a.value === undefined ? "" : fmtNum(parseFloat(a.value)),
    ]), { id: "alerts-table" });
  });

  fill(rules, "Cannot load rules", async () => {
    const data = await prom("api/v1/rules").catch(notServed);
    const groups = data.groups || [];
    if (!groups.length) return el("div", { class: "muted", id: "no-rules", text: "No rule groups are loaded." });
    return groups.map(group);
  });

  fetchJSON("api/v2/silences").then((list) => {
    if (!Array.isArray(list)) return;
    silences.hidden = false;
    const rows = list.map((s) => [
      badge(s.status && s.status.state),
      (s.matchers || []).map((m) => el("code", { class: "label", text: `${m.name}${m.isEqual === false ? "!" : ""}${m.isRegex ? "=~" : "="}${JSON.stringify(m.value)}` })),
      `${fmtTime(Date.parse(s.startsAt))} → ${fmtTime(Date.parse(s.endsAt))}`, s.createdBy || "", s.comment || "",
    ]);
    silences.replaceChildren(el("h2", { text: "Silences" }),
      rows.length ? table(["State", "Matchers", "Period", "Created by", "Comment"], rows, { id: "silences-table" }) : el("div", { class: "muted", text: "No silences." }));
  }).catch(() => { /* no built-in Alertmanager: the section stays hidden */ });
}

function notServed(e) {
  if (e.status === 404) throw new Error("this server does not evaluate rules (the API answered 404)");
  throw e;
}

function badge(state) {
  return el("span", { class: `badge ${state || "unknown"}`, text: state || "unknown" });
}

function labelList(labels) {
  return Object.entries(labels || {}).map(([k, v]) => el("code", { class: "label", text: `${k}=${JSON.stringify(v)}` }));
}

function annotationList(annotations) {
  return Object.entries(annotations || {}).map(([k, v]) => el("div", {}, el("b", { text: `${k}: ` }), v));
}

function group(g) {
  const meta = [`file ${g.file || "–"}`, `every ${fmtDuration(g.interval || 0)}`,
    g.lastEvaluation ? `last evaluated ${fmtTime(Date.parse(g.lastEvaluation))}` : "never evaluated",
    `took ${fmtDuration(g.evaluationTime || 0)}`];
  return el("div", { class: "card group", "data-group": g.name },
    el("h3", { text: g.name }), el("div", { class: "muted", text: meta.join(" · ") }),
    table(["Rule", "State", "Health", "Last evaluation", "Alerts"], (g.rules || []).map((r) => [
      el("div", {}, el("b", { text: `${r.type === "alerting" ? "alert" : "record"}: ${r.name}` }),
        el("pre", { class: "expr", text: r.query }),
        r.duration ? el("div", { class: "muted", text: `for ${fmtDuration(r.duration)}` }) : null,
        labelList(r.labels), annotationList(r.annotations)),
      r.type === "alerting" ? badge(r.state) : "",
      el("div", {}, badge(r.health), r.lastError ? el("div", { class: "error-text", text: r.lastError }) : null),
      r.lastEvaluation ? `${fmtTime(Date.parse(r.lastEvaluation))} (${fmtDuration(r.evaluationTime || 0)})` : "–",
      (r.alerts || []).map((a) => el("div", { class: "alert" }, badge(a.state), " ", labelsText(a.labels))),
    ])));
}
