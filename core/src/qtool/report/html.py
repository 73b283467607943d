"""The report document as one self-contained HTML page: tables rendered here, charts drawn by Vega-Lite in the page.

Everything is inline (style, script, the document as JSON), nothing is fetched:
the page opens from a file:// URL or a CI artifact. Numbers in the tables are
the document's, formatted by :func:`fmt`.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files

from ..analysis import snr_text
from .bundle import vega_bundle

ASSETS = files(__package__) / "assets"


def fmt(value, digits: int = 4) -> str:
    """A number as the page shows it (``-`` for none)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def fmt_snr(value) -> str:
    """An SQNR of the document (a number, or "Infinity" / "-Infinity" / "NaN") as the page shows it."""
    return "-" if value is None else snr_text(value)


def render(document: dict, *, charts: bool = True) -> str:
    """The page of a report document (``charts`` False: tables only, no script bundle, e.g. for explain)."""
    title = f"qtool report: {document.get('model', '?')} for {document['platform']}"
    sections = [_summary(document)] if "coverage" in document else []
    if charts:
        sections += [_error_section(document), _distribution_section()]
    sections += [_passes(document)] if document.get("passes") else []
    sections.append(_dispatch(document["dispatch"]))
    data = json.dumps(document, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    scripts = f"<script>{_asset('table.js')}</script>"
    if charts:
        scripts += f"\n<script>{vega_bundle()}</script>\n<script>{_asset('report.js')}</script>"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_asset('report.css')}</style>\n"
            f"</head><body>\n<header><h1>{_e(title)}</h1><nav>{_nav(sections)}</nav></header>\n<main>\n"
            + "\n".join(sections)
            + f"\n</main>\n<script type=\"application/json\" id=\"qtool-data\">{data}</script>\n{scripts}\n"
            "</body></html>\n")


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _nav(sections: list[str]) -> str:
    links = []
    for section in sections:
        anchor = section.split('id="', 1)[1].split('"', 1)[0]
        heading = section.split("<h2>", 1)[1].split("</h2>", 1)[0]
        links.append(f'<a href="#{anchor}">{heading}</a>')
    return " ".join(links)


def _table(headers: list[str], rows: list[list[str]], table_id: str = "", cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    attributes = (f' id="{table_id}"' if table_id else "") + (f' class="{cls}"' if cls else "")
    return f"<table{attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(d: dict) -> str:
    cov = d["coverage"]
    reasons = _table(["kept float because", "ops"],
                     [[_e(r), str(n)] for r, n in cov["float_reasons"].items()] or [["(no op kept float)", "0"]],
                     "float-reasons")
    outputs = _table(["output", "SQNR (dB)", "cosine", "MSE"],
                     [[_e(o["output"]), fmt_snr(o["snr_db"]), fmt(o["cosine"], 6), fmt(o["mse"])]
                      for o in d["outputs"]], "outputs")
    agreement = d.get("agreement")
    if agreement:
        facts = [[_e(k), _e(fmt(v))] for k, v in agreement.items() if not isinstance(v, dict | list)]
        agree = _table(["simulation vs exported model", "value"], facts, "agreement")
    else:
        agree = "<p id=\"agreement\">no exported model was compared with the simulation</p>"
    counts = d["diagnostics"]["counts"]
    items = "".join(f"<li class=\"{_e(i['severity'])}\">{_e(i['severity'])} [{_e(i['code'])}] "
                    f"{_e(i['op'] or '')} {_e(i['message'])}</li>" for i in d["diagnostics"]["items"])
    diagnostics = (_table(["severity", "count"], [[_e(s), str(n)] for s, n in counts.items()], "diagnostics")
                   + (f"<details><summary>all diagnostics</summary><ul>{items}</ul></details>" if items else ""))
    origins = _table(["key", "set by"], [[_e(k), _e(v)] for k, v in sorted(d["config"]["origins"].items())])
    return (f'<section id="summary"><h2>Summary</h2>'
            f'<p class="lead"><b id="quantized-count">{cov["quantized"]}</b> of <b id="total-count">{cov["total"]}'
            f'</b> ops quantized, <b>{cov["float"]}</b> kept float; measured on {d["samples"]} calibration '
            f'samples.</p><div class="grid"><div><h3>Float vs quantized (simulation)</h3>{outputs}'
            f'<h3>Agreement</h3>{agree}</div><div><h3>Coverage</h3>{reasons}<h3>Diagnostics</h3>{diagnostics}</div>'
            f'</div><details><summary>configuration and where each setting came from</summary>'
            f'<pre>{_e(d["config"]["description"])}</pre>{origins}</details></section>')


def _error_section(d: dict) -> str:
    return ('<section id="errors"><h2>Per-layer error</h2>'
            '<p>Graph-wise: each quantized op\'s output in the fully quantized run against float (error accumulated '
            'from upstream). Layer-wise: the graph outputs\' SQNR with only that op quantized. Scroll sideways, '
            'drag or use the wheel on a chart to pan and zoom, double-click to reset, click a bar to see its '
            'layer below.</p>'
            '<label>order <select id="order"><option value="index">topological</option>'
            '<option value="rank">worst first</option></select></label>'
            f'<h3>Graph-wise error ({len(d["graphwise"])} ops)</h3><div class="scroll"><div id="graphwise-chart" '
            'class="chart"></div></div>'
            f'<h3>Layer-wise sensitivity ({len(d["layerwise"])} ops)</h3>{_unmeasured(d)}<div class="scroll"><div '
            'id="layerwise-chart" class="chart"></div></div></section>')


def _unmeasured(d: dict) -> str:
    """Why the layer-wise sensitivity was not measured (a graph without floating-point output), if it was not."""
    why = d.get("layerwise_unmeasured")
    return f'<p id="layerwise-unmeasured">{_e(why)}</p>' if why else ""


def _distribution_section() -> str:
    return ('<section id="layers"><h2>Layer details</h2>'
            '<p>Activation histograms (float run, log counts) with the clipping range in use and the ranges each '
            'observer proposes (the one <code>auto</code> picks is marked), and the weights\' range per channel '
            'against their clipping range. The worst layers are shown first; pick any layer.</p>'
            '<label>layer <select id="layer-select"></select></label>'
            '<div id="layer-details"></div></section>')


def _passes(d: dict) -> str:
    parts = [_accuracy_pass(r) for r in d["passes"] if r["accuracy"]]
    timing = _table(["pass", "modified", "seconds"],
                    [[_e(r["name"]), "yes" if r["modified"] else "no", f"{r['seconds']:.3f}"] for r in d["passes"]],
                    "pass-timings")
    ran = "".join(parts) or "<p>No accuracy pass ran.</p>"
    return (f'<section id="passes"><h2>Passes</h2><h3>What the accuracy passes changed</h3>{ran}'
            f'<details><summary>every pass and its time</summary>{timing}</details></section>')


def _accuracy_pass(run: dict) -> str:
    details = run["details"]
    head = f'<h4>{_e(run["name"])} ({"changed the model" if run["modified"] else "changed nothing"})</h4>'
    if run["name"] == "SensitivityFallback":
        changes = _table(["op", "to", "sensitivity SQNR (dB)", "outlier ratio"],
                         [[_e(c["op"]), _e(c["to"] if isinstance(c["to"], str) else ", ".join(c["to"])),
                           fmt_snr(c["sensitivity_snr_db"]), fmt(c.get("outlier_ratio"))]
                          for c in details.get("changed", [])], "fallback-changes")
        tried = details.get("tried", {})
        steps = _table(["ops changed", "score", "gain over none"],
                       [[_e(k), fmt(v), fmt(None if v is None or tried.get("0") is None else v - tried["0"])]
                        for k, v in tried.items()], "fallback-tried")
        return (f'{head}<p>budget {_e(details.get("budget"))}: {fmt(details.get("before"))} &rarr; '
                f'{fmt(details.get("after"))} ({"met" if details.get("met") else "not met"}), '
                f'{len(details.get("changed", []))} of {details.get("candidates")} candidates changed</p>'
                f'{changes}{steps}')
    if run["name"] == "CrossLayerEqualization" and "scales" in details:
        rows = [[_e(p), fmt(s["min"]), fmt(s["max"])] for p, s in details["scales"].items()]
        return (f'{head}<p>{details.get("sweeps")} sweeps</p>'
                + _table(["pair", "smallest scale", "largest scale"], rows, "equalization-scales"))
    return f"{head}<pre>{_e(json.dumps(details, indent=1)[:20000])}</pre>"


def _dispatch(ops: list[dict]) -> str:
    def tensors(entries):
        return "<br>".join(_e(f"{t['tensor']}: {t['scheme'] or 'float'}") for t in entries)

    rows = [[str(i), _e(op["name"]), _e(op["op_type"]), "quantized" if op["quantized"] else "float", _e(op["reason"]),
             tensors(op["inputs"]), tensors(op["outputs"])] for i, op in enumerate(ops)]
    return (f'<section id="dispatch"><h2>Dispatch ({len(ops)} ops)</h2>'
            '<label>filter <input id="dispatch-filter" type="search" placeholder="op name, type or reason">'
            '</label><div class="table-scroll">'
            + _table(["#", "op", "type", "decision", "reason", "inputs", "outputs"], rows, "dispatch-table")
            + "</div></section>")
