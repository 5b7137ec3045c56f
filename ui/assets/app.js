// The router: one page module per hash path; each exports render(container, route) and may
// return a function that stops what it started (timers, sockets) when the page is left.
import * as status from "./status.js";
import * as metrics from "./metrics.js";
import * as logs from "./logs.js";
import * as traces from "./traces.js";
import * as alerts from "./alerts.js";
import * as targets from "./targets.js";
import { errorBox, route } from "./lib.js";

// The SQL page's module (and its chart code) is fetched the first time the page is shown:
// the other pages never need it. It renders only if the page is still the one shown.
const sql = {
  render(view, r) {
    import("./sql.js")
      .then((m) => { if (view.dataset.page === "sql" && !view.childElementCount) m.render(view, r); })
      .catch((e) => view.replaceChildren(errorBox("sql page", e)));
  },
};
const pages = { status, metrics, logs, traces, sql, alerts, targets };
let stop = null;

function show() {
  const r = route();
  const name = pages[r.parts[0]] ? r.parts[0] : "status";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
  if (stop) stop();
  stop = null;
  const view = document.getElementById("view");
  view.replaceChildren();
  view.dataset.page = name;
  try {
    stop = pages[name].render(view, r) || null;
  } catch (e) {
    view.replaceChildren(errorBox(`${name} page`, e));
  }
}

window.addEventListener("hashchange", show);
show();
