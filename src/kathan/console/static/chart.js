// A stacked bar chart in SVG, drawn from scratch: one bar per day, one segment per series.

import { s, h, fmtCompact, fmtNumber } from "./dom.js";

const PALETTE_SIZE = 8;

function niceStep(raw) {
  if (raw <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return Math.max(1, nice * power);
}

export function dayLabel(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
}

export function seriesClass(i) {
  return `series-${i % PALETTE_SIZE}`;
}

/**
 * days: ["YYYY-MM-DD", ...]; series: [{name, values: Map(day -> number)}]; unit: "requests".
 * width: pixels available. Returns an <svg>.
 */
export function stackedBarChart({ days, series, unit, width, height = 260, label }) {
  const margin = { top: 12, right: 8, bottom: 28, left: 52 };
  const w = Math.max(240, Math.floor(width));
  const plotW = w - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;

  const totals = days.map((day) => series.reduce((sum, se) => sum + (se.values.get(day) || 0), 0));
  const max = Math.max(0, ...totals);
  const step = niceStep(max / 4);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const y = (v) => margin.top + plotH - (v / top) * plotH;

  const svg = s("svg", { class: "chart", width: w, height, viewBox: `0 0 ${w} ${height}`,
    role: "img", "aria-label": label });

  // Grid and y axis labels.
  for (let v = 0; v <= top + 1e-9; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    svg.append(s("line", { class: v === 0 ? "base-line" : "grid-line", x1: margin.left, x2: w - margin.right, y1: yy, y2: yy }));
    svg.append(s("text", { class: "axis-label", x: margin.left - 8, y: yy + 4, "text-anchor": "end" }, fmtCompact(v)));
  }

  // Bars.
  const band = plotW / Math.max(1, days.length);
  const barW = Math.max(1, Math.min(36, band * 0.72));
  days.forEach((day, i) => {
    let acc = 0;
    const x = margin.left + i * band + (band - barW) / 2;
    if (totals[i] > 0) {
      // Behind the bars, the whole day's column: hovering above a bar gives the day's total.
      const lines = series.filter((se) => se.values.get(day))
        .map((se) => `${se.name}: ${fmtNumber(se.values.get(day))}`);
      svg.append(s("rect", { x: (margin.left + i * band).toFixed(2), y: margin.top, width: band.toFixed(2),
        height: plotH, fill: "transparent" },
      s("title", null, [`${day}: ${fmtNumber(totals[i])} ${unit}`, ...(lines.length > 1 ? lines : [])].join("\n"))));
    }
    series.forEach((se, k) => {
      const v = se.values.get(day) || 0;
      if (!v) return;
      const y0 = y(acc);
      const y1 = y(acc + v);
      acc += v;
      svg.append(s("rect", { class: `bar ${seriesClass(k)}`, x: x.toFixed(2), y: y1.toFixed(2),
        width: barW.toFixed(2), height: Math.max(0.5, y0 - y1).toFixed(2) },
      s("title", null, `${day} · ${se.name}: ${fmtNumber(v)} ${unit}`)));
    });
  });

  // X axis labels, as many as fit.
  const maxLabels = Math.max(2, Math.floor(plotW / 64));
  const every = Math.ceil(days.length / maxLabels);
  days.forEach((day, i) => {
    if (i % every !== 0) return;
    const cx = margin.left + i * band + band / 2;
    svg.append(s("text", { class: "axis-label", x: cx.toFixed(2), y: height - 8, "text-anchor": "middle" }, dayLabel(day)));
  });
  return svg;
}

export function legend(series) {
  return h("div", { class: "legend", "aria-hidden": "true" }, series.map((se, k) =>
    h("span", { class: "legend-item" }, h("span", { class: `swatch ${seriesClass(k)}` }), se.name)));
}
