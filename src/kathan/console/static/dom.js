// DOM helpers. Everything the console shows is built with these: text goes in as
// text nodes, never as markup, so a server-provided string can never become HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function applyAttrs(el, attrs, svg) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      if (svg) el.setAttribute("class", value);
      else el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "testid") {
      el.dataset.testid = value;
    } else if (!svg && (name === "value" || name === "checked" || name === "selected"
      || name === "disabled" || name === "multiple" || name === "hidden")) {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function appendChildren(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) appendChildren(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** h("button", {class: "btn", onClick: fn, testid: "x"}, "Label", child...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs, false);
  appendChildren(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs, true);
  appendChildren(el, children);
  return el;
}

/** Replace all children of el. */
export function mount(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
  return el;
}

let idCounter = 0;
export function uid(prefix = "k") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: returns {wrap, control}. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  const hintEl = hint ? h("p", { class: "hint", id: uid("h") }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  const wrap = h("div", { class: "field" },
    h("label", { for: control.id }, label), control, hintEl);
  return { wrap, control };
}

export function checkbox(label, attrs = {}) {
  const input = h("input", { type: "checkbox", id: uid("c"), ...attrs });
  const wrap = h("div", { class: "field field-check" }, input, h("label", { for: input.id }, label));
  return { wrap, control: input };
}

/** <select> from [{value, label}] or strings. */
export function select(options, attrs = {}) {
  const el = h("select", attrs);
  setOptions(el, options);
  return el;
}

export function setOptions(selectEl, options, keep = true) {
  const previous = selectEl.value;
  selectEl.replaceChildren(...options.map((o) => {
    const opt = typeof o === "string" ? { value: o, label: o } : o;
    return h("option", { value: opt.value }, opt.label);
  }));
  if (keep && options.some((o) => (typeof o === "string" ? o : o.value) === previous)) {
    selectEl.value = previous;
  }
}

export function button(label, attrs = {}) {
  return h("button", { type: "button", class: "btn", ...attrs }, label);
}

/** A table inside a horizontally scrolling container. */
export function table(headers, rows, attrs = {}) {
  const thead = h("thead", null, h("tr", null, headers.map((t) =>
    (t instanceof Node ? t : h("th", { scope: "col" }, t)))));
  const tbody = h("tbody", null, rows);
  return h("div", { class: "table-wrap", tabindex: "0", role: "region",
    "aria-label": attrs["aria-label"] || "Table" },
  h("table", { class: "table", ...attrs }, thead, tbody));
}

export function badge(text, kind = "neutral", attrs = {}) {
  return h("span", { class: `badge badge-${kind}`, ...attrs }, text);
}

export function chip(text) {
  return h("span", { class: "chip" }, text);
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);
}

export function empty(text, ...extra) {
  return h("div", { class: "empty" }, h("p", null, text), extra);
}

// ---- Formatting -------------------------------------------------------------------

const numberFmt = new Intl.NumberFormat();
export function fmtNumber(n) {
  if (n === null || n === undefined) return "—";
  return numberFmt.format(n);
}

export function fmtCompact(n) {
  if (n === null || n === undefined) return "—";
  if (Math.abs(n) < 1000) return String(n);
  const units = [["B", 1e9], ["M", 1e6], ["k", 1e3]];
  for (const [u, v] of units) {
    if (Math.abs(n) >= v) {
      const x = n / v;
      return `${x >= 100 ? Math.round(x) : Number(x.toFixed(1))}${u}`;
    }
  }
  return String(n);
}

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

export function fmtDateTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit" });
}

/** A <time> element showing a date, the full time in its title. */
export function timeEl(iso, withTime = false) {
  if (!iso) return h("span", { class: "muted" }, withTime ? "Never" : "—");
  return h("time", { datetime: iso, title: fmtDateTime(iso) }, withTime ? fmtDateTime(iso) : fmtDate(iso));
}

/** "60 rpm · 10k tpm · …" or "Unlimited". */
export function fmtLimits(limits) {
  if (!limits) return "Unlimited";
  const parts = [];
  if (limits.rpm != null) parts.push(`${fmtNumber(limits.rpm)} req/min`);
  if (limits.tpm != null) parts.push(`${fmtCompact(limits.tpm)} tokens/min`);
  if (limits.max_concurrent != null) parts.push(`${fmtNumber(limits.max_concurrent)} concurrent`);
  if (limits.quota_tokens != null) {
    parts.push(`${fmtCompact(limits.quota_tokens)} tokens/${limits.quota_period || "period"}`);
  }
  if (limits.max_tokens != null) parts.push(`max_tokens ≤ ${fmtNumber(limits.max_tokens)}`);
  return parts.length ? parts.join(" · ") : "Unlimited";
}

/** YYYY-MM-DD of a Date in UTC. */
export function utcDay(date) {
  return date.toISOString().slice(0, 10);
}

/** Local date input value (YYYY-MM-DD) to an RFC 3339 time with the local offset, end of that day. */
export function endOfLocalDay(value) {
  const [y, m, d] = value.split("-").map(Number);
  const date = new Date(y, m - 1, d, 23, 59, 59);
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  const abs = Math.abs(offset);
  const pad = (n) => String(n).padStart(2, "0");
  return `${y}-${pad(m)}-${pad(d)}T23:59:59${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}
