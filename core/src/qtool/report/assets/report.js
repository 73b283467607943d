// Draws the report's charts with Vega-Lite from the document embedded in the page (#qtool-data).
"use strict";
const doc = JSON.parse(document.getElementById("qtool-data").textContent);
const EXACT_DB = 80;  // an op without error is drawn at this SQNR
const UNBOUNDED_DB = -20;  // an op whose error is infinite (NaN or inf in one model only) is drawn down to this
const WORST_SHOWN = 3;  // layers whose details are drawn on load
const embedOptions = {actions: false, renderer: "svg"};
const pending = [];

// An SQNR of the document: a number, or "Infinity" (exact), "-Infinity" (infinite error), "NaN" (undefined).
function snrText(value) {
  const db = Number(value);
  if (Number.isFinite(db)) return db.toFixed(2);
  return db > 0 ? "exact" : db < 0 ? "-inf" : "undefined";
}

function ranked(rows) {
  const order = rows.map((r, i) => [Number(r.snr_db), i]).sort((a, b) => a[0] - b[0]);
  const out = rows.map((r) => ({...r, snr: Math.max(UNBOUNDED_DB, Math.min(Number(r.snr_db), EXACT_DB)),
                                snr_text: snrText(r.snr_db)}));
  order.forEach(([, i], rank) => { out[i].rank = rank; });
  return out;
}

function errorSpec(rows, field, title) {
  return {
    width: Math.max(860, Math.min(rows.length * 7, 6000)), height: 220,
    data: {values: rows},
    transform: [{calculate: `datum.${field} - 0.45`, as: "x0"}, {calculate: `datum.${field} + 0.45`, as: "x1"}],
    params: [{name: "zoom", select: {type: "interval", encodings: ["x"]}, bind: "scales"}],
    mark: {type: "rect", cursor: "pointer"},
    encoding: {
      x: {field: "x0", type: "quantitative", title: field === "index" ? "quantized op (topological order)" : "rank (worst first)",
          axis: {tickMinStep: 1}},
      x2: {field: "x1"},
      y: {field: "snr", type: "quantitative", title: title}, y2: {datum: 0},
      color: {field: "op_type", type: "nominal", legend: {title: "op type", columns: 2}},
      tooltip: [{field: "op"}, {field: "op_type"}, {field: "snr_text", title: "SQNR (dB)"},
                {field: "cosine", format: ".6f"}, {field: "mse", format: ".3g"}],
    },
  };
}

function drawErrors() {
  const field = document.getElementById("order").value;
  for (const [key, target, title] of [["graphwise", "#graphwise-chart", "output SQNR (dB)"],
                                       ["layerwise", "#layerwise-chart", "graph output SQNR (dB)"]]) {
    pending.push(vegaEmbed(target, errorSpec(ranked(doc[key]), field, title), embedOptions).then((result) => {
      result.view.addEventListener("click", (event, item) => {
        if (item && item.datum && item.datum.op) showLayer(item.datum.op, true);
      });
    }));
  }
}

function histogramSpec(entry) {
  const h = entry.histogram;
  const bins = h.counts.map((count, i) => ({x0: h.lo + i * h.width, x1: h.lo + (i + 1) * h.width, count}));
  const lines = [];
  for (const [name, range] of Object.entries(entry.candidates)) {
    const label = name === entry.auto_choice ? `${name} (auto's choice)` : name;
    lines.push({name: label, value: range[0]}, {name: label, value: range[1]});
  }
  const inUse = entry.range.map((value) => ({name: `in use (${entry.observer})`, value}));
  return {
    title: {text: `${entry.tensor} (${entry.side} of ${entry.op})`, fontSize: 12,
            subtitle: `black: range in use (${entry.observer}) [${entry.range.map((v) => v.toPrecision(4)).join(", ")}]`},
    width: 460, height: 170,
    layer: [
      {data: {values: bins}, mark: {type: "rect", color: "#7d8fa8"},
       params: [{name: "zoom", select: {type: "interval", encodings: ["x"]}, bind: "scales"}],
       encoding: {x: {field: "x0", type: "quantitative", title: entry.scheme}, x2: {field: "x1"},
                  y: {field: "count", type: "quantitative", scale: {type: "symlog"}, title: "count"}, y2: {datum: 0},
                  tooltip: [{field: "x0", format: ".4g"}, {field: "x1", format: ".4g"}, {field: "count"}]}},
      {data: {values: lines}, mark: {type: "rule", strokeWidth: 2, strokeDash: [4, 3]},
       encoding: {x: {field: "value", type: "quantitative"},
                  color: {field: "name", type: "nominal", title: "observers' ranges"},
                  tooltip: [{field: "name"}, {field: "value", format: ".5g"}]}},
      {data: {values: inUse}, mark: {type: "rule", strokeWidth: 3, color: "#111"},
       encoding: {x: {field: "value", type: "quantitative"}, tooltip: [{field: "name"}, {field: "value", format: ".5g"}]}},
    ],
  };
}

function weightSpec(entry) {
  const rows = entry.min.map((lo, c) => ({channel: c, min: lo, max: entry.max[c], clip_min: entry.clip_min[c], clip_max: entry.clip_max[c]}));
  const shown = rows.length < entry.channels ? ` (first ${rows.length} of ${entry.channels} channels)` : "";
  const x = {field: "channel", type: "quantitative", title: `channel (axis ${entry.axis})${shown}`};
  return {
    title: {text: `${entry.tensor}: ${entry.scheme}`, fontSize: 12},
    width: 460, height: 170, data: {values: rows},
    layer: [
      {mark: {type: "area", color: "#d7dde6"},
       params: [{name: "zoom", select: {type: "interval", encodings: ["x"]}, bind: "scales"}], encoding: {x, y: {field: "clip_min", type: "quantitative", title: "value"}, y2: {field: "clip_max"}}},
      {mark: {type: "rule", color: "#3b6fb6", strokeWidth: 2},
       encoding: {x, y: {field: "min", type: "quantitative"}, y2: {field: "max"},
                  tooltip: [{field: "channel"}, {field: "min", format: ".4g"}, {field: "max", format: ".4g"},
                            {field: "clip_min", title: "clip min", format: ".4g"}, {field: "clip_max", title: "clip max", format: ".4g"}]}},
    ],
  };
}

const dispatchByName = new Map(doc.dispatch.map((op) => [op.name, op]));
const graphwiseByOp = new Map(doc.graphwise.map((r) => [r.op, r]));

function showLayer(name, scroll) {
  const container = document.getElementById("layer-details");
  const id = `layer-${[...dispatchByName.keys()].indexOf(name)}`;
  let box = document.getElementById(id);
  if (!box) {
    const op = dispatchByName.get(name);
    const tensors = new Set([...op.inputs, ...op.outputs].map((t) => t.tensor));
    const activations = doc.activations.filter((a) => a.op === name || tensors.has(a.tensor));
    const weights = doc.weights.filter((w) => w.op === name);
    const error = graphwiseByOp.get(name);
    box = document.createElement("div");
    box.className = "layer";
    box.id = id;
    const heading = document.createElement("h3");
    heading.textContent = `${name} (${op.op_type}): ${op.quantized ? "quantized" : "float"}, ${op.reason}` +
      (error ? `; graph-wise SQNR ${snrText(error.snr_db)}${Number.isFinite(Number(error.snr_db)) ? " dB" : ""}` : "");
    const charts = document.createElement("div");
    charts.className = "charts";
    box.append(heading, charts);
    container.prepend(box);
    for (const spec of [...activations.map(histogramSpec), ...weights.map(weightSpec)]) {
      const holder = document.createElement("div");
      holder.className = "chart";
      charts.append(holder);
      pending.push(vegaEmbed(holder, spec, embedOptions));
    }
    if (!activations.length && !weights.length) charts.textContent = "no quantized activation or weight here";
  }
  if (scroll) box.scrollIntoView({behavior: "smooth"});
}

function fillLayerSelect() {
  const select = document.getElementById("layer-select");
  const worst = ranked(doc.graphwise).sort((a, b) => a.rank - b.rank);
  for (const row of worst) {
    const option = document.createElement("option");
    option.value = row.op;
    option.textContent = `${row.op} (${row.op_type}, ${row.snr_text}${Number.isFinite(Number(row.snr_db)) ? " dB" : ""})`;
    select.append(option);
  }
  select.addEventListener("change", () => showLayer(select.value, true));
  worst.slice(0, WORST_SHOWN).reverse().forEach((row) => showLayer(row.op, false));
}

document.getElementById("order").addEventListener("change", drawErrors);
drawErrors();
fillLayerSelect();
Promise.all(pending).then(() => {
  document.body.dataset.charts = String(document.querySelectorAll(".chart svg").length);
  document.body.dataset.renderedMs = performance.now().toFixed(0);  // from navigation start: load, parse, draw
},
                          (error) => { document.body.dataset.chartError = String(error); console.error(error); });
