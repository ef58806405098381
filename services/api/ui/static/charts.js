"use strict";
// The dashboard's charts, drawn as SVG: a fit's downsampled loss curve (GET /v1/fits/{id}/losses?points=N:
// per bucket its min, max and last loss) on a log scale, the fit's data with its fitted line, and
// points a page carries (an instrument's history, a fit's residuals). No library, nothing from elsewhere.

const NS = "http://www.w3.org/2000/svg";
const BOX = { width: 640, height: 360, left: 58, right: 14, top: 12, bottom: 34 };

function node(name, attrs, parent) {
  const el = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  if (parent) parent.appendChild(el);
  return el;
}

function text(parent, x, y, content, anchor) {
  const el = node("text", { x, y, "text-anchor": anchor || "middle" }, parent);
  el.textContent = content;
  return el;
}

function linearTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const step = [1, 2, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function label(value) {
  const abs = Math.abs(value);
  return abs !== 0 && (abs >= 1e5 || abs < 1e-3) ? value.toExponential(0) : String(+value.toPrecision(4));
}

function frame(svg, xs, ys, xTicks, yTicks, yLabel) {
  const w = BOX.width - BOX.left - BOX.right, h = BOX.height - BOX.top - BOX.bottom;
  const axes = node("g", { class: "axis" }, svg);
  for (const t of yTicks) {
    const y = ys(t);
    node("line", { class: "grid", x1: BOX.left, x2: BOX.left + w, y1: y, y2: y }, axes);
    text(axes, BOX.left - 6, y + 4, yLabel(t), "end");
  }
  for (const t of xTicks) text(axes, xs(t), BOX.top + h + 16, label(t));
  node("line", { x1: BOX.left, x2: BOX.left, y1: BOX.top, y2: BOX.top + h }, axes);
  node("line", { x1: BOX.left, x2: BOX.left + w, y1: BOX.top + h, y2: BOX.top + h }, axes);
}

function scale(lo, hi, from, to) {
  const span = hi - lo || 1;
  return (v) => from + ((v - lo) / span) * (to - from);
}

async function drawLossChart(svg) {
  const body = await (await fetch(svg.dataset.source, { credentials: "same-origin" })).json();
  const buckets = body.buckets || [];
  if (!buckets.length) {
    text(svg, BOX.width / 2, BOX.height / 2, "no epochs recorded yet");
    svg.dataset.rendered = "empty";
    return;
  }
  const kinds = [["", "loss"], ["val_", "loss val"]].filter(([p]) => buckets[0][p + "last"] !== undefined);
  const values = [];
  for (const [p] of kinds) for (const b of buckets) for (const k of ["min", "max"]) {
    const v = b[p + k];
    if (v !== null && v > 0 && Number.isFinite(v)) values.push(v);
  }
  const lo = Math.log10(Math.min(...values)), hi = Math.log10(Math.max(...values));
  const logLo = Math.floor(lo * 4) / 4, logHi = Math.max(Math.ceil(hi * 4) / 4, logLo + 0.25);
  const first = buckets[0].first_epoch, last = buckets[buckets.length - 1].last_epoch;
  const xs = scale(first, last, BOX.left, BOX.width - BOX.right);
  const yLog = scale(logLo, logHi, BOX.height - BOX.bottom, BOX.top);
  const ys = (v) => yLog(Math.log10(Math.max(v, 10 ** logLo)));
  // Powers of ten; with few decades in view, their 2× and 5× too.
  const decades = [];
  const steps = logHi - logLo < 3 ? [1, 2, 5] : [1];
  for (let d = Math.floor(logLo); d <= Math.ceil(logHi); d++) {
    for (const m of steps) {
      const v = m * 10 ** d;
      if (Math.log10(v) >= logLo - 1e-9 && Math.log10(v) <= logHi + 1e-9) decades.push(v);
    }
  }
  frame(svg, xs, ys, linearTicks(first, last, 6), decades, label);
  for (const [p, cls] of kinds) {
    const upper = [], lower = [], line = [];
    for (const b of buckets) {
      const mid = (b.first_epoch + b.last_epoch) / 2;
      if (b[p + "max"] === null || b[p + "min"] === null) continue;
      upper.push(`${xs(mid).toFixed(1)},${ys(b[p + "max"]).toFixed(1)}`);
      lower.unshift(`${xs(mid).toFixed(1)},${ys(b[p + "min"]).toFixed(1)}`);
      line.push(`${xs(b.last_epoch).toFixed(1)},${ys(b[p + "last"]).toFixed(1)}`);
    }
    node("polygon", { class: `envelope ${cls.replace("loss", "").trim()}`, points: upper.concat(lower).join(" ") }, svg);
    node("polyline", { class: cls, points: line.join(" ") }, svg);
  }
  text(svg, BOX.left + 4, BOX.top + 10, kinds.length > 1 ? "blue: training · orange: validation" : "training loss", "start");
  svg.dataset.points = String(buckets.length);
  svg.dataset.rendered = "true";
}

async function drawDataChart(svg) {
  const data = await (await fetch(svg.dataset.source, { credentials: "same-origin" })).json();
  const held = new Set(data.validation_indices);
  const xlo = Math.min(...data.t_u), xhi = Math.max(...data.t_u);
  const w = svg.dataset.w === undefined ? null : Number(svg.dataset.w), b = Number(svg.dataset.b);
  // A fit that has not converged: the least-squares line it has not reached, drawn dashed beside it.
  const wOpt = svg.dataset.wOpt === undefined ? null : Number(svg.dataset.wOpt), bOpt = Number(svg.dataset.bOpt);
  // Any other model: its curve as [t_u, t_c] points across the data, sampled by the server with the
  // function the predictions use (a Callendar–Van Dusen fit is inverted there, not here).
  const curve = (name) => (svg.dataset[name] === undefined ? null : JSON.parse(svg.dataset[name]));
  const fittedCurve = curve("curve"), optimumCurve = curve("curveOpt");
  const ylist = data.t_c.concat(w === null ? [] : [w * xlo + b, w * xhi + b])
    .concat(wOpt === null ? [] : [wOpt * xlo + bOpt, wOpt * xhi + bOpt])
    .concat((fittedCurve || []).map((p) => p[1]), (optimumCurve || []).map((p) => p[1]));
  const ylo = Math.min(...ylist), yhi = Math.max(...ylist);
  const pad = (hi, lo) => (hi - lo || 1) * 0.05;
  const xs = scale(xlo - pad(xhi, xlo), xhi + pad(xhi, xlo), BOX.left, BOX.width - BOX.right);
  const ys = scale(ylo - pad(yhi, ylo), yhi + pad(yhi, ylo), BOX.height - BOX.bottom, BOX.top);
  frame(svg, xs, ys, linearTicks(xlo, xhi, 6), linearTicks(ylo, yhi, 5), label);
  if (w !== null) node("line", { class: "fitted", x1: xs(xlo), y1: ys(w * xlo + b), x2: xs(xhi), y2: ys(w * xhi + b) }, svg);
  if (wOpt !== null) node("line", { class: "optimum", x1: xs(xlo), y1: ys(wOpt * xlo + bOpt), x2: xs(xhi), y2: ys(wOpt * xhi + bOpt) }, svg);
  const drawn = (points) => points.map(([u, c]) => `${xs(u)},${ys(c)}`).join(" ");
  if (fittedCurve) node("polyline", { class: "fitted", points: drawn(fittedCurve), fill: "none" }, svg);
  if (optimumCurve) node("polyline", { class: "optimum", points: drawn(optimumCurve), fill: "none" }, svg);
  data.t_u.forEach((u, i) => node("circle", { class: held.has(i) ? "held" : "train", cx: xs(u), cy: ys(data.t_c[i]), r: 4 }, svg));
  text(svg, BOX.width / 2, BOX.height - 4, "t_u (raw reading) → t_c (reference)");
  svg.dataset.rendered = "true";
}

function dateLabel(ms, span) {
  // Calibrations days apart are told by their date; hours apart (a demo, a test) by the time too.
  const iso = new Date(ms).toISOString();
  return span < 2 * 86400e3 ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(0, 10);
}

// Points carried by the page itself (data-points: [[x, y, err, flagged], ...]): an instrument's
// calibrations over time with their ±2 SE bars, its as-found RMS against its tolerance (data-limit),
// or a fit's residuals around zero (data-zero). x is a time in ms when data-x="time".
async function drawPointsChart(svg) {
  const points = JSON.parse(svg.dataset.points || "[]");
  if (!points.length) {
    text(svg, BOX.width / 2, BOX.height / 2, "nothing to show yet");
    svg.dataset.rendered = "empty";
    return;
  }
  const limit = svg.dataset.limit === undefined ? null : Number(svg.dataset.limit);
  const xsOf = points.map((p) => p[0]);
  const ysOf = points.flatMap((p) => [p[1] - (p[2] || 0), p[1] + (p[2] || 0)])
    .concat(limit === null ? [] : [limit]).concat(svg.dataset.zero !== undefined ? [0] : []);
  let xlo = Math.min(...xsOf), xhi = Math.max(...xsOf);
  if (xlo === xhi) { xlo -= 1; xhi += 1; }
  const ylo = Math.min(...ysOf), yhi = Math.max(...ysOf);
  const pad = (hi, lo) => (hi - lo || Math.abs(hi) || 1) * 0.08;
  const xs = scale(xlo - pad(xhi, xlo), xhi + pad(xhi, xlo), BOX.left, BOX.width - BOX.right);
  const ys = scale(ylo - pad(yhi, ylo), yhi + pad(yhi, ylo), BOX.height - BOX.bottom, BOX.top);
  const time = svg.dataset.x === "time";
  const xTicks = time ? points.map((p) => p[0]).filter((_, i, all) => i % Math.ceil(all.length / 6) === 0) : linearTicks(xlo, xhi, 6);
  frame(svg, xs, ys, [], linearTicks(ylo, yhi, 5), label);
  for (const t of xTicks) text(svg, xs(t), BOX.height - BOX.bottom + 16, time ? dateLabel(t, xhi - xlo) : label(t));
  if (svg.dataset.zero !== undefined) node("line", { class: "limit", x1: BOX.left, x2: BOX.width - BOX.right, y1: ys(0), y2: ys(0) }, svg);
  if (limit !== null) {
    node("line", { class: "limit", x1: BOX.left, x2: BOX.width - BOX.right, y1: ys(limit), y2: ys(limit) }, svg);
    text(svg, BOX.width - BOX.right - 4, ys(limit) - 4, `tolerance ${label(limit)}`, "end");
  }
  if (svg.dataset.join !== undefined) {
    node("polyline", { class: "trend", points: points.map((p) => `${xs(p[0]).toFixed(1)},${ys(p[1]).toFixed(1)}`).join(" ") }, svg);
  }
  for (const [x, y, err, flagged] of points) {
    if (err) node("line", { class: "errorbar", x1: xs(x), x2: xs(x), y1: ys(y - err), y2: ys(y + err) }, svg);
    node("circle", { class: flagged ? "flagged" : "train", cx: xs(x), cy: ys(y), r: 4 }, svg);
  }
  svg.dataset.drawn = String(points.length);
  svg.dataset.rendered = "true";
}

const DRAW = { loss: drawLossChart, data: drawDataChart, points: drawPointsChart };

for (const svg of document.querySelectorAll("svg[data-chart]")) {
  const draw = DRAW[svg.dataset.chart];
  draw(svg).catch((error) => {
    text(svg, BOX.width / 2, BOX.height / 2, `could not draw: ${error}`);
    svg.dataset.rendered = "error";
  });
}

// Filters that apply as soon as they change (the page's policy runs no inline handler).
for (const select of document.querySelectorAll("select[data-submit-on-change]")) {
  select.addEventListener("change", () => select.form.submit());
}
