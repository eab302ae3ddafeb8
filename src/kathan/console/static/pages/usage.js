// Usage: chart + table + CSV export for a date range and key; the limits and quotas
// panel. usageView() is shared with the admin page (everyone's usage).

import * as api from "../api.js";
import { h, mount, field, button, select, setOptions, loading, empty, fmtNumber, fmtLimits, fmtDate,
  utcDay, chip } from "../dom.js";
import { showError, toast } from "../ui.js";
import { stackedBarChart, legend } from "../chart.js";

const COLUMNS = [
  ["requests", "Requests"],
  ["succeeded", "Succeeded"],
  ["failed", "Failed"],
  ["cancelled", "Cancelled"],
  ["rate_limited", "Rate limited"],
  ["prompt_tokens", "Prompt tokens"],
  ["cached_tokens", "Cached tokens"],
  ["completion_tokens", "Completion tokens"],
  ["total_tokens", "Total tokens"],
];
const DAY_MS = 86400000;
const MAX_CHART_DAYS = 400;

function defaultRange() {
  const now = Date.now();
  return { since: utcDay(new Date(now - 29 * DAY_MS)), until: utcDay(new Date(now)) };
}

function daysBetween(since, until) {
  const out = [];
  let t = Date.parse(`${since}T00:00:00Z`);
  const end = Date.parse(`${until}T00:00:00Z`);
  while (t <= end && out.length < MAX_CHART_DAYS) {
    out.push(utcDay(new Date(t)));
    t += DAY_MS;
  }
  return out;
}

function totalsOf(rows) {
  const t = Object.fromEntries(COLUMNS.map(([k]) => [k, 0]));
  for (const r of rows) for (const [k] of COLUMNS) t[k] += Number(r[k]) || 0;
  return t;
}

function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  // A model name is whatever a client sent (a 404 keeps it): one that starts like a
  // formula must stay text in a spreadsheet, not run there (CSV injection).
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function usageCsv(rows) {
  const header = ["day", "model", "endpoint", ...COLUMNS.map(([k]) => k)];
  const lines = [header.join(",")];
  for (const r of rows) lines.push([r.day, r.model, r.endpoint ?? "", ...COLUMNS.map(([k]) => r[k] ?? 0)].map(csvCell).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

function download(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename, class: "visually-hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function usageTable(rows) {
  const order = (a, b) => String(a.model).localeCompare(String(b.model)) || String(a.endpoint).localeCompare(String(b.endpoint));
  const sorted = [...rows].sort((a, b) => (a.day === b.day ? order(a, b) : a.day < b.day ? 1 : -1));
  const totals = totalsOf(rows);
  const body = sorted.length
    ? sorted.map((r) => h("tr", { testid: "usage-row" },
      h("td", { class: "nowrap" }, r.day),
      h("td", { class: "mono" }, r.model),
      h("td", { class: "mono nowrap" }, r.endpoint ?? ""),
      COLUMNS.map(([k]) => h("td", { class: "num" }, fmtNumber(r[k] ?? 0)))))
    : [h("tr", null, h("td", { colspan: String(COLUMNS.length + 3), class: "muted" }, "No usage in this period."))];
  const foot = h("tfoot", null, h("tr", null,
    h("td", { colspan: "3" }, "Total"),
    COLUMNS.map(([k]) => h("td", { class: "num", testid: k === "requests" ? "usage-total-requests" : `usage-total-${k.replace(/_/g, "-")}`,
      dataset: { value: String(totals[k]) } }, fmtNumber(totals[k])))));
  const wrap = h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Usage by day, model and endpoint" },
    h("table", { class: "table", testid: "usage-table" },
      h("caption", { class: "visually-hidden" }, "Requests and tokens per UTC day, model and endpoint, with totals"),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Day (UTC)"), h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Endpoint"),
        COLUMNS.map(([, label]) => h("th", { scope: "col", class: "num" }, label)))),
      h("tbody", null, body), foot));
  return wrap;
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value));
}

/**
 * The usage view. endpoint: "/v1/usage" or "/admin/usage".
 * loadKeyOptions(accountId) → [{value, label}] for the key filter (besides "All").
 * loadAccountOptions() → [{value, label}] (admin only: adds an account filter).
 */
export function usageView({ endpoint, loadKeyOptions, loadAccountOptions, title = "Activity" }) {
  const range = defaultRange();
  const since = h("input", { type: "date", value: range.since, max: range.until, testid: "usage-since" });
  const until = h("input", { type: "date", value: range.until, max: range.until, testid: "usage-until" });
  const keySel = select([{ value: "", label: "All keys" }], { testid: "usage-key-filter" });
  const accountSel = loadAccountOptions ? select([{ value: "", label: "All accounts" }], { testid: "usage-account-filter" }) : null;
  const exportBtn = button("Export CSV", { testid: "usage-export", disabled: true });
  const metricBtns = {
    requests: button("Requests", { class: "btn btn-sm", testid: "usage-metric-requests", "aria-pressed": "true" }),
    tokens: button("Tokens", { class: "btn btn-sm", testid: "usage-metric-tokens", "aria-pressed": "false" }),
  };
  const chartHost = h("div", { class: "chart-wrap", testid: "usage-chart" });
  const statsHost = h("div", { class: "stats" });
  const tableHost = h("div", null);
  const status = h("div", { class: "visually-hidden", role: "status", "aria-live": "polite" });

  let metric = "requests";
  let rows = [];
  let loadedRange = range;
  let seq = 0;

  const el = h("div", { class: "usage-grid" },
    h("div", { class: "filters", role: "group", "aria-label": "Filters" },
      field("From (UTC)", since).wrap,
      field("To (UTC)", until).wrap,
      accountSel ? field("Account", accountSel).wrap : null,
      field("Key", keySel).wrap,
      h("div", { class: "page-actions" }, exportBtn)),
    status,
    statsHost,
    h("div", { class: "card" },
      h("div", { class: "card-header" },
        h("div", null, h("h2", null, title), h("p", null, "Per UTC day, stacked by model.")),
        h("div", { class: "segmented", role: "group", "aria-label": "Chart shows" }, metricBtns.requests, metricBtns.tokens)),
      chartHost),
    tableHost);

  function drawChart() {
    const days = daysBetween(loadedRange.since, loadedRange.until);
    const models = [...new Set(rows.map((r) => r.model))].sort();
    const key = metric === "requests" ? "requests" : "total_tokens";
    const series = models.map((name) => {
      const values = new Map();
      for (const r of rows) if (r.model === name) values.set(r.day, (values.get(r.day) || 0) + (Number(r[key]) || 0));
      return { name, values };
    });
    const unit = metric === "requests" ? "requests" : "tokens";
    if (!rows.length) {
      mount(chartHost, empty("No usage in this period."));
      return;
    }
    const width = chartHost.clientWidth || chartHost.parentElement?.clientWidth || 720;
    mount(chartHost,
      stackedBarChart({ days, series, unit, width,
        label: `Bar chart of ${unit} per day from ${loadedRange.since} to ${loadedRange.until}, by model. The table below has the same numbers.` }),
      legend(series));
  }

  function setMetric(m) {
    metric = m;
    metricBtns.requests.setAttribute("aria-pressed", String(m === "requests"));
    metricBtns.tokens.setAttribute("aria-pressed", String(m === "tokens"));
    drawChart();
  }
  metricBtns.requests.addEventListener("click", () => setMetric("requests"));
  metricBtns.tokens.addEventListener("click", () => setMetric("tokens"));

  async function load() {
    const mySeq = ++seq;
    if (since.value && until.value && since.value > until.value) {
      showError("The start date is after the end date.");
      return;
    }
    const query = { since: since.value, until: until.value, key_id: keySel.value };
    if (accountSel) query.account_id = accountSel.value;
    exportBtn.disabled = true;
    mount(tableHost, loading("Loading usage…"));
    mount(chartHost, loading());
    statsHost.replaceChildren();
    try {
      const res = await api.get(endpoint, query);
      if (mySeq !== seq) return;
      rows = res.data || [];
      loadedRange = { since: since.value || range.since, until: until.value || range.until };
      const t = totalsOf(rows);
      mount(statsHost,
        stat("Requests", fmtNumber(t.requests)),
        stat("Failed", fmtNumber(t.failed + t.rate_limited)),
        stat("Prompt tokens", fmtNumber(t.prompt_tokens)),
        stat("Completion tokens", fmtNumber(t.completion_tokens)),
        stat("Total tokens", fmtNumber(t.total_tokens)));
      mount(tableHost, usageTable(rows));
      drawChart();
      exportBtn.disabled = false;
      status.textContent = `Usage loaded: ${fmtNumber(t.requests)} requests, ${fmtNumber(t.total_tokens)} tokens.`;
    } catch (err) {
      if (mySeq !== seq) return;
      rows = [];
      mount(tableHost, empty("Usage could not be loaded."));
      chartHost.replaceChildren();
      showError(err);
    }
  }

  async function refreshKeys() {
    try {
      const options = await loadKeyOptions(accountSel ? accountSel.value : "");
      setOptions(keySel, [{ value: "", label: "All keys" }, ...options]);
    } catch (err) {
      showError(err);
    }
  }

  exportBtn.addEventListener("click", () => {
    const name = `kathan-usage-${loadedRange.since}-to-${loadedRange.until}.csv`;
    download(name, usageCsv(rows), "text/csv;charset=utf-8");
    toast(`Downloaded ${name}`);
  });
  since.addEventListener("change", load);
  until.addEventListener("change", load);
  keySel.addEventListener("change", load);
  if (accountSel) {
    accountSel.addEventListener("change", async () => {
      keySel.value = "";
      await refreshKeys();
      load();
    });
  }

  // Redraw the chart at the new width when its container resizes.
  let lastWidth = 0;
  const observer = typeof ResizeObserver === "function" ? new ResizeObserver((entries) => {
    const w = Math.round(entries[0].contentRect.width);
    if (w && Math.abs(w - lastWidth) > 8) {
      lastWidth = w;
      if (rows.length) drawChart();
    }
  }) : null;
  if (observer) observer.observe(chartHost);

  async function start() {
    if (accountSel) {
      try {
        setOptions(accountSel, [{ value: "", label: "All accounts" }, ...await loadAccountOptions()]);
      } catch (err) {
        showError(err);
      }
    }
    await Promise.all([refreshKeys(), load()]);
  }

  return { el, start, stop: () => { seq += 1; if (observer) observer.disconnect(); } };
}

// ---- Limits and quotas -----------------------------------------------------------------

function nextPeriod(periodStart, period) {
  const [y, m, d] = periodStart.split("-").map(Number);
  const next = period === "month" ? Date.UTC(y, m, 1) : Date.UTC(y, m - 1, d + 1);
  return utcDay(new Date(next));
}

function quotaCard(q) {
  const used = Number(q.used_tokens) || 0;
  const total = Number(q.quota_tokens) || 0;
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 100;
  const bar = h("div", { class: `progress-bar${pct >= 100 ? " full" : pct >= 80 ? " warn" : ""}` });
  bar.style.width = `${pct.toFixed(1)}%`;
  const name = q.key_id === null ? "Playground" : q.name;
  return h("div", { class: "quota", testid: "quota", dataset: { keyId: q.key_id ?? "console" } },
    h("div", { class: "quota-head" }, h("span", null, name),
      h("span", { class: "mono" }, `${Math.round(pct)}%`)),
    h("div", { class: "quota-meta" },
      `${fmtNumber(used)} / ${fmtNumber(total)} tokens per ${q.quota_period} · since ${fmtDate(`${q.period_start}T00:00:00Z`)}, resets ${nextPeriod(q.period_start, q.quota_period)} (UTC)`),
    h("div", { class: "progress", role: "progressbar", "aria-label": `${name} quota`, "aria-valuemin": "0",
      "aria-valuemax": String(total), "aria-valuenow": String(Math.min(used, total)),
      "aria-valuetext": `${fmtNumber(used)} of ${fmtNumber(total)} tokens used this ${q.quota_period}` }, bar));
}

function limitsPanel() {
  const body = h("div", null, loading());
  const el = h("div", { class: "card", testid: "quotas" },
    h("div", { class: "card-header" }, h("div", null, h("h2", null, "Limits and quotas"),
      h("p", null, "Token quotas of your active keys and of the playground, for the current period."))),
    body);
  api.get("/v1/account").then((res) => {
    const limits = res.account?.limits;
    const parts = fmtLimits(limits).split(" · ");
    mount(body,
      h("p", { class: "hint" }, "Your account limits (the limits of the keys you create):"),
      h("div", { class: "limits-list" }, parts.map((p) => chip(p))),
      res.quotas && res.quotas.length
        ? h("div", { class: "quotas" }, res.quotas.map(quotaCard))
        : h("p", { class: "muted" }, "No token quotas: none of your keys has one."));
  }).catch((err) => {
    mount(body, h("p", { class: "muted" }, "Limits could not be loaded."));
    showError(err);
  });
  return el;
}

export function renderUsage(root) {
  const view = usageView({
    endpoint: "/v1/usage",
    loadKeyOptions: async () => {
      const res = await api.get("/v1/keys");
      return [{ value: "console", label: "Playground" },
        ...(res.data || []).map((k) => ({ value: k.id, label: `${k.name} (${k.prefix}…)${k.revoked_at ? " — revoked" : ""}` }))];
    },
  });
  root.append(
    h("div", { class: "page-header" }, h("div", null, h("h1", null, "Usage"),
      h("p", null, "Requests and tokens per day, by model. Days are UTC."))),
    h("div", { class: "stack" }, view.el, limitsPanel()));
  view.start();
  return () => view.stop();
}
