// Scrape targets in Prometheus's API shape (/api/v1/targets): one card per scrape pool with
// each target's endpoint, health, labels, last scrape and error, down targets first; the
// targets relabelled away are counted per pool.
import { el, prom, fill, table, fmtTime, fmtDuration } from "./lib.js";

export function render(view) {
  const pools = el("section", { id: "targets" });
  view.append(el("h1", { text: "Targets" }), pools);
  fill(pools, "Cannot load targets", async () => {
    const data = await prom("api/v1/targets");
    const active = data.activeTargets || [];
    const dropped = data.droppedTargetCounts || {};
    if (!active.length) return el("div", { class: "muted", id: "no-targets", text: "No scrape targets: add scrape_configs to the config file." });
    const byPool = new Map();
    for (const t of active) {
      if (!byPool.has(t.scrapePool)) byPool.set(t.scrapePool, []);
      byPool.get(t.scrapePool).push(t);
    }
    return [...byPool.entries()].map(([name, targets]) => pool(name, targets, dropped[name] || 0));
  });
}

function pool(name, targets, dropped) {
  const order = { down: 0, unknown: 1, up: 2 };
  targets.sort((a, b) => order[a.health] - order[b.health] || a.scrapeUrl.localeCompare(b.scrapeUrl));
  const up = targets.filter((t) => t.health === "up").length;
  const meta = [`${up}/${targets.length} up`, dropped ? `${dropped} dropped by relabelling` : null].filter(Boolean);
  return el("div", { class: "card group", "data-pool": name },
    el("h3", { text: name }), el("div", { class: "muted", text: meta.join(" · ") }),
    table(["Endpoint", "State", "Labels", "Last scrape", "Error"], targets.map((t) => [
      el("a", { href: t.globalUrl, text: t.scrapeUrl }),
      el("span", { class: `badge ${t.health}`, text: t.health }),
      Object.entries(t.labels).map(([k, v]) => el("code", { class: "label", text: `${k}=${JSON.stringify(v)}` })),
      t.lastScrape.startsWith("0001-") ? "never" : `${fmtTime(Date.parse(t.lastScrape))} (${fmtDuration(t.lastScrapeDuration)})`,
      t.lastError ? el("span", { class: "error-text", text: t.lastError }) : "",
    ]), { class: "targets-table" }));
}
