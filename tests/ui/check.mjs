// Drives headless Chromium through every page of novamon's embedded UI against a running
// server that tests/tests/ui_browser.rs filled with known data, checking what a person would
// look at, and saves a screenshot of each page. Exits non-zero on the first failed check.
//
// Environment: NOVAMON_URL, SCREENSHOT_DIR, EXPECT (JSON written by the Rust test).
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.NOVAMON_URL;
const shots = process.env.SCREENSHOT_DIR;
const expect = JSON.parse(process.env.EXPECT || "{}");
if (!base || !shots || !expect.metric) {
  console.error("NOVAMON_URL, SCREENSHOT_DIR and EXPECT must be set (tests/tests/ui_browser.rs sets them)");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const WAIT = 20000;

function check(ok, msg) {
  if (!ok) throw new Error(msg);
}

async function text(page, sel) {
  return (await page.locator(sel).first().textContent({ timeout: WAIT })) || "";
}

async function waitCount(page, sel, n) {
  await page.waitForFunction(([s, n]) => document.querySelectorAll(s).length === n, [sel, n], { timeout: WAIT })
    .catch(async () => {
      throw new Error(`expected ${n} × ${sel}, found ${await page.locator(sel).count()}`);
    });
}

const userDataDir = mkdtempSync(join(tmpdir(), "novamon-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || (await context.newPage());
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
const failedAssets = [];
page.on("response", (r) => {
  if (r.url().includes("/ui/") && !r.url().includes("/ui/api/") && r.status() >= 400) failedAssets.push(`${r.status()} ${r.url()}`);
});

const steps = [];
function step(name, fn) { steps.push([name, fn]); }

step("status", async () => {
  // The UI files come gzip-compressed; count what went over the wire.
  const files = [];
  const seen = (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/" || (u.pathname.startsWith("/ui/") && !u.pathname.startsWith("/ui/api/"))) files.push(r);
  };
  page.on("response", seen);
  await page.goto(`${base}/#/status`);
  await page.waitForLoadState("load");
  page.off("response", seen);
  let wire = 0;
  for (const r of files) {
    check(r.status() === 200 && (await r.headerValue("content-encoding")) === "gzip", `${r.url()} not served gzip-compressed (${r.status()})`);
    wire += (await r.request().sizes()).responseBodySize;
  }
  check(files.length === 11, `expected index.html + 10 UI files, loaded ${files.length}`);
  console.log(`     UI files: ${files.length}, ${wire} bytes compressed on the wire`);
  await page.waitForSelector('#stores-table [data-count="series"]', { timeout: WAIT });
  const series = Number((await text(page, '#stores-table [data-count="series"]')).replace(/,/g, ""));
  // At least what was written; the rule manager adds its ALERTS series as it evaluates.
  check(series >= expect.series_total, `status: ${series} series in the TSDB, expected at least ${expect.series_total}`);
  const streams = Number((await text(page, '#stores-table [data-count="streams"]')).replace(/,/g, ""));
  check(streams === expect.streams, `status: ${streams} log streams, expected ${expect.streams}`);
  const spans = Number((await text(page, '#stores-table [data-count="spans (estimate)"]')).replace(/,/g, ""));
  check(spans > 0, `status: span count ${spans}`);
  const bytes = await page.locator("#stores-table [data-bytes]").evaluateAll((els) => els.map((e) => Number(e.dataset.bytes)));
  check(bytes.length === 3 && bytes.every((b) => b > 0), `status: disk use per store ${bytes}`);
  const version = await text(page, "#facts");
  check(/Version\s*\d+\.\d+/.test(version) && version.includes("Uptime") && version.includes(expect.data_dir), `status facts: ${version}`);
  await page.waitForSelector("#ingest-table", { timeout: WAIT });
  const rw = await text(page, '#ingest-table [data-total="Remote-write"]');
  check(rw.startsWith(expect.samples.toLocaleString("en-US")), `status: remote-write total "${rw}", expected ${expect.samples} samples`);
  await page.waitForFunction(() => /samples\/s/.test(document.querySelector("#ingest-table")?.textContent || ""), null, { timeout: WAIT });
  const loki = await text(page, '#ingest-table [data-total="Loki push"]');
  check(loki.startsWith(`${expect.log_lines.toLocaleString("en-US")} log lines`), `status: Loki push total "${loki}", expected ${expect.log_lines} lines`);
  const spansIn = await text(page, '#ingest-table [data-total="OTLP/HTTP traces"]');
  check(/^[1-9][\d,]* spans/.test(spansIn), `status: OTLP/HTTP traces total "${spansIn}"`);
  const card = await text(page, "#cardinality");
  check(card.includes(expect.metric), `cardinality top-10 lacks ${expect.metric}: ${card.slice(0, 300)}`);
  await page.screenshot({ path: join(shots, "status.png"), fullPage: true });
});

step("status with a failing API keeps the other panels and says why", async () => {
  await page.route("**/api/v1/status/tsdb*", (r) => r.fulfill({ status: 503, contentType: "text/plain", body: "tsdb unavailable for the test" }));
  await page.goto(`${base}/#/status`);
  await page.reload();
  const err = await text(page, "#cardinality .error");
  check(err.includes("tsdb unavailable for the test") && err.includes("503"), `error panel: ${err}`);
  await page.waitForSelector('#stores-table [data-count="series"]', { timeout: WAIT });
  await page.screenshot({ path: join(shots, "status-api-error.png"), fullPage: true });
  await page.unroute("**/api/v1/status/tsdb*");
});

step("metrics graph", async () => {
  const url = `${base}/#/metrics?q=${encodeURIComponent(expect.metric)}&range=1h&tab=graph`;
  await page.goto(url);
  await waitCount(page, "svg.graph path.series", expect.series);
  const legend = await page.locator(".legend li").allTextContents();
  for (const room of expect.rooms) check(legend.some((l) => l.includes(`room="${room}"`)), `legend lacks room ${room}: ${legend}`);
  const drawn = await page.locator("svg.graph path.series").evaluateAll((ps) => ps.map((p) => (p.getAttribute("d").match(/[ML]/g) || []).length));
  check(drawn.every((n) => n > 100), `each line should have >100 points over the hour: ${drawn}`);
  await page.screenshot({ path: join(shots, "metrics-graph.png"), fullPage: true });

  // The link is shareable: a fresh tab with the same URL shows the same graph.
  const other = await context.newPage();
  await other.goto(url);
  await waitCount(other, "svg.graph path.series", expect.series);
  // So does a link in Prometheus's own form (alerts' generatorURL, graphLink).
  await other.goto(`${base}/graph?g0.expr=${encodeURIComponent(expect.metric)}&g0.tab=0&g0.range_input=2h`);
  await waitCount(other, "svg.graph path.series", expect.series);
  check((await other.locator("#range").inputValue()) === "2h", "range from g0.range_input not applied");
  await other.close();
});

step("metrics table and autocomplete", async () => {
  await page.goto(`${base}/#/metrics?tab=table`);
  const expr = page.locator("#expr");
  await expr.click();
  // Completion needs the name lists loaded; type slowly like a person.
  await page.waitForTimeout(300);
  await expr.pressSequentially(expect.metric.slice(0, 9), { delay: 30 });
  await page.waitForSelector(`#suggest li:text-is("${expect.metric}")`, { timeout: WAIT });
  const items = await page.locator("#suggest li").allTextContents();
  const idx = items.indexOf(expect.metric);
  for (let i = 0; i < idx; i++) await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Tab");
  check((await expr.inputValue()) === expect.metric, `completion gave "${await expr.inputValue()}"`);
  await expr.pressSequentially("{ro", { delay: 30 });
  await page.waitForSelector('#suggest li:text-is("room")', { timeout: WAIT });
  await page.keyboard.press("Escape");
  await expr.fill(`sum by (room) (${expect.metric})`);
  await page.click("#run");
  await waitCount(page, "#result-table tbody tr", expect.series);
  const hash = await page.evaluate(() => location.hash);
  check(hash.includes("tab=table") && decodeURIComponent(hash.replace(/\+/g, " ")).includes(`sum by (room) (${expect.metric})`), `state not in URL: ${hash}`);
  await page.screenshot({ path: join(shots, "metrics-table.png"), fullPage: true });
});

step("metrics query error is shown", async () => {
  await page.goto(`${base}/#/metrics?q=${encodeURIComponent("sum(rate(")}&tab=graph`);
  const err = await text(page, "#result .error");
  check(err.includes("bad_data") && err.includes("400"), `PromQL error message: ${err}`);
  await page.screenshot({ path: join(shots, "metrics-error.png") });
});

step("logs", async () => {
  await page.goto(`${base}/#/logs?q=${encodeURIComponent(expect.log_query)}&range=1h`);
  await waitCount(page, "#loglines .logline", expect.log_lines);
  await page.waitForSelector("#volume-total", { timeout: WAIT });
  const total = Number(await page.locator("#volume-total").getAttribute("data-total"));
  check(total === expect.log_lines, `volume histogram counts ${total} lines, expected ${expect.log_lines}`);
  const bars = await page.locator("#volume svg.graph rect").count();
  check(bars > 0, "volume histogram has no bars");
  // Newest first: the first line is the last pushed.
  const first = await text(page, "#loglines .logline .text");
  check(first.includes(expect.newest_line), `first line "${first}", expected the newest "${expect.newest_line}"`);
  // Expand the line carrying the trace id: its fields are listed, the id is a link.
  const withTrace = page.locator("#loglines .logline", { hasText: expect.trace_id }).first();
  await withTrace.locator(".text").click({ position: { x: 5, y: 5 } });
  const fields = await page.locator("table.fields").first().textContent({ timeout: WAIT });
  for (const f of ["app", "level", "msg", "trace_id"]) check(fields.includes(f), `expanded line lacks field ${f}: ${fields}`);
  await page.screenshot({ path: join(shots, "logs.png"), fullPage: true });
  await page.locator(`table.fields a.trace-link:text-is("${expect.trace_id}")`).click();
  await page.waitForFunction((id) => location.hash === `#/traces/${id}`, expect.trace_id, { timeout: WAIT });
  await waitCount(page, "#waterfall .wf-row.span", expect.spans.length);
});

step("logs query error is shown", async () => {
  await page.goto(`${base}/#/logs?q=${encodeURIComponent('{app="uishop"')}`);
  const err = await text(page, "#lines .error");
  check(err.includes("400"), `LogQL error message: ${err}`);
});

step("live tail", async () => {
  await page.goto(`${base}/#/logs?q=${encodeURIComponent(expect.log_query)}&range=1h`);
  await waitCount(page, "#loglines .logline", expect.log_lines);
  await page.click("#tail");
  await page.waitForFunction(() => /received/.test(document.querySelector("#line-count")?.textContent || ""), null, { timeout: WAIT });
  const marker = `tailed line ${Date.now()}`;
  const ns = `${BigInt(Date.now()) * 1000000n}`;
  const resp = await fetch(`${base}/loki/api/v1/push`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ streams: [{ stream: expect.log_labels, values: [[ns, marker]] }] }),
  });
  check(resp.status === 204, `push for tail: ${resp.status}`);
  await page.waitForSelector(`#loglines .logline:has-text("${marker}")`, { timeout: WAIT });
  const firstLine = await text(page, "#loglines .logline .text");
  check(firstLine.includes(marker), `tailed line should be on top, found "${firstLine}"`);
  await page.screenshot({ path: join(shots, "logs-tail.png") });
  await page.click("#tail");
});

step("trace search and waterfall", async () => {
  await page.goto(`${base}/#/traces?service=${encodeURIComponent(expect.service)}&lookback=1h`);
  await page.waitForSelector("#trace-table", { timeout: WAIT });
  const rows = await page.locator("#trace-table tbody tr").count();
  check(rows === 1, `trace search found ${rows} traces`);
  const ops = await page.locator("#operation option").allTextContents();
  check(ops.includes(expect.spans[0]), `operations of ${expect.service}: ${ops}`);
  await page.screenshot({ path: join(shots, "traces-search.png"), fullPage: true });
  await page.click("#trace-table a.trace-link");
  await waitCount(page, "#waterfall .wf-row.span", expect.spans.length);
  const names = await page.locator("#waterfall .wf-row.span .wf-name").allTextContents();
  for (let i = 0; i < expect.spans.length; i++) {
    check(names[i].includes(expect.spans[i]), `waterfall row ${i} "${names[i]}", expected ${expect.spans[i]} (tree order)`);
  }
  // Indentation follows the parent chain.
  const pads = await page.locator("#waterfall .wf-row.span .wf-name").evaluateAll((els) => els.map((e) => parseInt(e.style.paddingLeft)));
  check(pads[0] < pads[1], `child not indented: ${pads}`);
  check((await page.locator("#waterfall .wf-row.span.err").count()) === 1, "one span should be marked as an error");
  const errRow = page.locator("#waterfall .wf-row.span.err");
  await errRow.click();
  const details = await text(page, ".span-details");
  check(details.includes(expect.event) && details.includes(expect.attribute), `span details: ${details}`);
  await page.screenshot({ path: join(shots, "trace.png"), fullPage: true });
});

step("trace search with a bad duration says why", async () => {
  await page.goto(`${base}/#/traces?service=${encodeURIComponent(expect.service)}&minDuration=fast`);
  const err = await text(page, "#traces .error");
  check(err.includes("400"), `bad minDuration: ${err}`);
});

step("rules, alerts and silences", async () => {
  // A silence through the built-in Alertmanager's v2 API, as amtool would create it.
  const now = Date.now();
  const resp = await fetch(`${base}/api/v2/silences`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ matchers: [{ name: "room", value: "c", isRegex: false, isEqual: true }],
      startsAt: new Date(now).toISOString(), endsAt: new Date(now + 3600000).toISOString(),
      createdBy: "ui-test", comment: "maintenance of room c" }),
  });
  check(resp.ok, `creating a silence: HTTP ${resp.status} ${await resp.text()}`);
  // The page reads once, as Prometheus's does; reload until the evaluations have happened.
  const deadline = Date.now() + WAIT;
  let rows = 0;
  do {
    await page.goto(`${base}/#/alerts`);
    await page.reload();
    await page.waitForFunction(() => ["#rules", "#alerts"].every((s) => {
      const t = document.querySelector(s)?.textContent || "";
      return t.trim() && !/loading/.test(t);
    }), null, { timeout: WAIT });
    rows = await page.locator("#alerts-table tbody tr").count();
  } while (rows < 3 && Date.now() < deadline && (await page.waitForTimeout(500), true));
  check(rows === 3, `expected 3 active alerts (2 firing, 1 pending), found ${rows}: ${await text(page, "#alerts")}`);
  const states = await page.locator("#alerts-table tbody tr td:first-child").allTextContents();
  check(states.join() === "firing,firing,pending", `alerts should list firing first: ${states}`);
  const alertsText = await text(page, "#alerts-table");
  for (const want of ['alertname="RoomTooWarm"', 'room="b"', 'room="c"', "room b is at 19.4", 'alertname="RoomWarmForLong"', "19.463"]) {
    check(alertsText.includes(want), `active alerts lack ${want}: ${alertsText}`);
  }
  const group = await text(page, '#rules .group[data-group="ui-test"]');
  for (const want of ["rules/ui.yml", "every 1s", "last evaluated", "ui_test_temperature > 19", "for 1h", "record: ui_test:broken"]) {
    check(group.includes(want), `rule group lacks "${want}": ${group}`);
  }
  check((await page.locator("#rules .badge.ok").count()) === 2, "the two alerting rules should be healthy");
  check((await page.locator("#rules .badge.err").count()) === 1, "the failing recording rule should show health err");
  const lastError = await text(page, "#rules .error-text");
  check(lastError.length > 10, `the failing rule's lastError: "${lastError}"`);
  await page.waitForSelector("#silences-table", { timeout: WAIT });
  const sil = await text(page, "#silences-table");
  check(sil.includes('room="c"') && sil.includes("maintenance of room c") && sil.includes("active"), `silences: ${sil}`);
  await page.screenshot({ path: join(shots, "alerts.png"), fullPage: true });
});

// The parsers behind the pages, run in the page itself on inputs the data above does not cover.
step("targets", async () => {
  // The target file is read within 5 s, then scraped every second: reload until both pools
  // show their state.
  const deadline = Date.now() + WAIT;
  let shown = "";
  do {
    await page.goto(`${base}/#/targets`);
    await page.reload();
    await page.waitForFunction(() => {
      const t = document.querySelector("#targets")?.textContent || "";
      return t.trim() && !/loading/.test(t);
    }, null, { timeout: WAIT });
    shown = await text(page, "#targets");
  } while (!(shown.includes("1/1 up") && shown.includes("connection refused")) && Date.now() < deadline && (await page.waitForTimeout(500), true));
  check(await page.locator('[data-pool="down"] .badge.down').count() === 1, `the down target: ${shown}`);
  check(shown.includes("connection refused"), `the down target's error: ${shown}`);
  check(await page.locator('[data-pool="self"] .badge.up').count() === 1, `the file-discovered target: ${shown}`);
  check(shown.includes('job="self"'), `target labels: ${shown}`);
  await page.screenshot({ path: join(shots, "targets.png"), fullPage: true });
});

step("page helpers", async () => {
  const r = await page.evaluate(async () => {
    const logs = await import("./ui/logs.js");
    const traces = await import("./ui/traces.js");
    const status = await import("./ui/status.js");
    const graph = await import("./ui/graph.js");
    let tagError = "";
    try { traces.parseTags("a=1 oops"); } catch (e) { tagError = e.message; }
    return {
      logfmt: logs.parseFields('level=error msg="disk \\"sda\\" full" took=3ms trace_id=abc'),
      json: logs.parseFields('{"a":{"b":1},"c":"x","d":[1]}'),
      tags: traces.parseTags('http.status_code=500 msg="a b"'),
      tagError,
      counters: status.parseCounters('# HELP x y\nx_total{a="1",b="q\\"z"} 5\ny 2.5e3\n'),
      ticks: graph.niceTicks(0.3, 9.7, 5).ticks,
    };
  });
  const eq = (a, b, what) => check(JSON.stringify(a) === JSON.stringify(b), `${what}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
  eq(r.logfmt, { level: "error", msg: 'disk "sda" full', took: "3ms", trace_id: "abc" }, "logfmt fields");
  eq(r.json, { a_b: "1", c: "x", d: "[1]" }, "JSON fields");
  eq(r.tags, { "http.status_code": "500", msg: "a b" }, "trace search tags");
  check(r.tagError.includes("oops"), `bad tags error: ${r.tagError}`);
  eq(r.counters, [{ name: "x_total", labels: { a: "1", b: 'q\\"z' }, value: 5 }, { name: "y", labels: {}, value: 2500 }], "counters");
  eq(r.ticks, [2, 4, 6, 8], "axis ticks");
});

let failed = null;
for (const [name, fn] of steps) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failed = `${name}: ${e.message}`;
    console.log(`FAIL ${failed}`);
    await page.screenshot({ path: join(shots, "FAILED.png"), fullPage: true }).catch(() => {});
    break;
  }
}
if (!failed && pageErrors.length) failed = `JavaScript errors in the page: ${pageErrors.join("; ")}`;
if (!failed && failedAssets.length) failed = `UI files failed to load: ${failedAssets.join("; ")}`;
await context.close();
rmSync(userDataDir, { recursive: true, force: true });
if (failed) {
  console.error(failed);
  process.exit(1);
}
console.log(`all UI checks passed; screenshots in ${shots}`);
