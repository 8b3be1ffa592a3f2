#!/usr/bin/env python3
"""Draws a Grafana dashboard's panels from a Prometheus server's data into a PNG.

This is not Grafana: it reads the dashboard JSON, runs each panel's queries against
Prometheus's HTTP API (query_range for time series, an instant query for stat and table
panels) with the dashboard's variables substituted, and draws the results at the panels'
grid positions with their titles, units, legends, value mappings and thresholds. It supports
what examples/grafana/lb-dashboard.json uses: timeseries, stat and table panels, the merge and
organize transformations, and the $__rate_interval and $vip variables.

    scripts/render-dashboard.py --prometheus http://127.0.0.1:9090 \
        --dashboard examples/grafana/lb-dashboard.json --output docs/dashboard.png

Needs python3-matplotlib.
"""

import argparse
import datetime
import json
import math
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

# Grafana's classic palette, in its order.
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642", "#CCA300"]
NAMED_COLORS = {"green": "#56A64B", "red": "#E02F44", "orange": "#FF9830", "yellow": "#F2CC0C", "blue": "#3274D9"}
GRID_COLUMNS = 24
INCHES_PER_COLUMN = 0.75
INCHES_PER_ROW = 0.36
HEADER_INCHES = 0.8
UTC = datetime.timezone.utc


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--dashboard", required=True, help="the dashboard JSON")
    p.add_argument("--output", required=True, help="the PNG to write")
    p.add_argument("--start", type=float, help="unix seconds (default: 15 minutes before --end)")
    p.add_argument("--end", type=float, help="unix seconds (default: now)")
    p.add_argument("--rate-interval", default="4s", help="what $__rate_interval stands for (4 scrape intervals)")
    p.add_argument("--vip", default=".*", help="what $vip stands for (a regular expression)")
    return p.parse_args()


def api(base, path, params):
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"{url}: {answer}")
    return answer["data"]["result"]


def substitute(expr, args, step):
    for name, value in (("$__rate_interval", args.rate_interval), ("$__interval", f"{step}s"), ("${vip}", args.vip), ("$vip", args.vip)):
        expr = expr.replace(name, value)
    return expr


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
        return f"{metric.get('__name__', '')}{{{labels}}}"
    out = fmt
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return out


def si(value, suffix, decimals=1):
    if value == 0 or not math.isfinite(value):
        return f"0{suffix}" if value == 0 else str(value)
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{decimals}f} {prefix}{suffix.strip()}"
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.2g}"
    return f"{text}{suffix}"


def fmt_unit(value, unit):
    """A value as Grafana would show it for the units this dashboard uses."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.2g}%" if value * 100 < 1 else f"{value * 100:.1f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    suffix = {"pps": " p/s", "bps": " b/s", "cps": " /s"}.get(unit, "")
    return si(value, suffix)


def mapped(value, mappings):
    """The value mapping's text and color for `value`, if any."""
    for mapping in mappings or []:
        if mapping.get("type") == "value":
            for key, result in mapping.get("options", {}).items():
                try:
                    if float(key) == value:
                        return result.get("text", key), NAMED_COLORS.get(result.get("color"), result.get("color"))
                except ValueError:
                    continue
    return None


def threshold_color(value, thresholds):
    color = None
    for step in (thresholds or {}).get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            color = step.get("color")
    return NAMED_COLORS.get(color, color) or "#333333"


def panel_box(fig, panel, fig_w, fig_h):
    """The panel's rectangle in figure fractions: left, bottom, width, height."""
    g = panel["gridPos"]
    left = g["x"] * INCHES_PER_COLUMN / fig_w
    width = g["w"] * INCHES_PER_COLUMN / fig_w
    top = 1 - (HEADER_INCHES + g["y"] * INCHES_PER_ROW) / fig_h
    height = g["h"] * INCHES_PER_ROW / fig_h
    pad_x, pad_y = 0.05 / fig_w, 0.05 / fig_h
    box = (left + pad_x, top - height + pad_y, width - 2 * pad_x, height - 2 * pad_y)
    fig.patches.append(FancyBboxPatch(box[:2], box[2], box[3], boxstyle="round,pad=0,rounding_size=0.002",
                                      transform=fig.transFigure, facecolor="#FFFFFF", edgecolor="#C7D0D9", linewidth=0.8, zorder=-1))
    fig.text(box[0] + 0.08 / fig_w, box[1] + box[3] - 0.06 / fig_h, panel["title"], ha="left", va="top",
             fontsize=9, fontweight="bold", color="#202226")
    return box


def inner(box, fig_w, fig_h, left_in, bottom_in, top_in=0.3, right_in=0.12):
    return (box[0] + left_in / fig_w, box[1] + bottom_in / fig_h,
            box[2] - (left_in + right_in) / fig_w, box[3] - (top_in + bottom_in) / fig_h)


def no_data(fig, box):
    fig.text(box[0] + box[2] / 2, box[1] + box[3] / 2, "No data", ha="center", va="center", fontsize=10, color="#8E8E8E")


def draw_timeseries(fig, panel, box, args, start, end, step, fig_w, fig_h):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode", "none") != "none"
    series = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], args, step)
        for s in api(args.prometheus, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}):
            points = {float(t): float(v) for t, v in s["values"]}
            series.append((legend(target.get("legendFormat"), s["metric"]), points))
    if not series:
        no_data(fig, box)
        return
    series.sort(key=lambda s: s[0])
    width_in = box[2] * fig_w
    ncol = max(1, int(width_in // 1.9))
    legend_rows = math.ceil(len(series) / ncol)
    ax = fig.add_axes(inner(box, fig_w, fig_h, 0.75, 0.32 + 0.17 * legend_rows))
    times = sorted({t for _, points in series for t in points})
    x = [datetime.datetime.fromtimestamp(t, UTC) for t in times]
    base = [0.0] * len(times)
    for i, (name, points) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        ys = [points.get(t, math.nan) for t in times]
        if stacked:
            ys = [b + (0.0 if math.isnan(y) else y) for b, y in zip(base, ys)]
            ax.fill_between(x, base, ys, color=color, alpha=0.25, linewidth=0)
            base = ys
        else:
            ax.fill_between(x, 0, [0.0 if math.isnan(y) else y for y in ys], color=color, alpha=0.08, linewidth=0)
        ax.plot(x, ys, color=color, linewidth=1.1, label=name)
    ax.set_xlim(datetime.datetime.fromtimestamp(start, UTC), datetime.datetime.fromtimestamp(end, UTC))
    ax.set_ylim(bottom=defaults.get("min", None))
    if all(y == 0 or math.isnan(y) for _, points in series for y in points.values()):
        ax.set_ylim(0, 1)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_unit(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=max(3, int(width_in // 1.2))))
    ax.tick_params(labelsize=7, colors="#464C54")
    ax.grid(True, color="#E4E7EB", linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.1 - 0.2 / (box[3] * fig_h)), ncol=ncol, fontsize=7, frameon=False,
              handlelength=1.2, columnspacing=1.0, borderaxespad=0)


def draw_stat(fig, panel, box, args, end, step):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    values = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], args, step)
        for s in api(args.prometheus, "/api/v1/query", {"query": expr, "time": end}):
            values.append((legend(target.get("legendFormat"), s["metric"]), float(s["value"][1])))
    if not values:
        no_data(fig, box)
        return
    for i, (name, value) in enumerate(values):
        hit = mapped(value, defaults.get("mappings"))
        text, color = hit if hit else (fmt_unit(value, defaults.get("unit", "short")), None)
        color = color or threshold_color(value, defaults.get("thresholds"))
        cx = box[0] + box[2] * (i + 0.5) / len(values)
        fig.text(cx, box[1] + box[3] * 0.42, text, ha="center", va="center", fontsize=17, fontweight="bold", color=color)
        if len(values) > 1 or name:
            fig.text(cx, box[1] + box[3] * 0.12, name, ha="center", va="center", fontsize=7.5, color="#464C54")


def draw_table(fig, panel, box, args, end, step, fig_w, fig_h):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    frames = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], args, step)
        value_column = f"Value #{target['refId']}" if len(panel["targets"]) > 1 else "Value"
        rows = [dict(s["metric"], **{value_column: float(s["value"][1])}) for s in api(args.prometheus, "/api/v1/query", {"query": expr, "time": end})]
        frames.append((value_column, rows))
    transformations = {t["id"]: t.get("options", {}) for t in panel.get("transformations", [])}
    value_columns = [c for c, _ in frames]
    if "merge" in transformations:
        merged = {}
        for _, rows in frames:
            for row in rows:
                key = tuple(sorted((k, v) for k, v in row.items() if k not in value_columns))
                merged.setdefault(key, dict(key)).update(row)
        rows = list(merged.values())
    else:
        rows = [row for _, frame in frames for row in frame]
    if not rows:
        no_data(fig, box)
        return
    labels = sorted({k for row in rows for k in row if k not in value_columns})
    columns = ["Time"] + labels + value_columns
    organize = transformations.get("organize", {})
    columns = [c for c in columns if not organize.get("excludeByName", {}).get(c)]
    names = [organize.get("renameByName", {}).get(c) or c for c in columns]

    def cell(row, column):
        """The cell's text and, from a value mapping, its color."""
        value = row.get(column, "")
        if isinstance(value, float):
            hit = mapped(value, defaults.get("mappings"))
            return hit if hit else (f"{value:g}", None)
        return (value if len(value) <= 18 else value[:16] + "…"), None

    body = [[cell(row, c) for c in columns] for row in sorted(rows, key=lambda r: [str(r.get(c, "")) for c in columns])]
    rect = inner(box, fig_w, fig_h, 0.12, 0.08, top_in=0.3, right_in=0.12)
    ax = fig.add_axes(rect)
    ax.axis("off")
    height = min(1.0, (len(body) + 1) * 0.2 / (rect[3] * fig_h))
    table = ax.table(cellText=[[text for text, _ in row] for row in body], colLabels=names, cellLoc="left", colLoc="left",
                     bbox=[0, 1 - height, 1, height])
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    for (r, k), c in table.get_celld().items():
        c.set_edgecolor("#E4E7EB")
        if r == 0:
            c.set_text_props(fontweight="bold", color="#3274D9")
        elif body[r - 1][k][1]:
            c.set_text_props(color=body[r - 1][k][1], fontweight="bold")


def when(t):
    return datetime.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def main():
    args = parse_args()
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    end = args.end or datetime.datetime.now(UTC).timestamp()
    start = args.start or end - 15 * 60
    step = max(1, round((end - start) / 300))
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig_w, fig_h = GRID_COLUMNS * INCHES_PER_COLUMN, HEADER_INCHES + rows * INCHES_PER_ROW
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110, facecolor="#F4F5F5")
    fig.text(0.08 / fig_w, 1 - 0.12 / fig_h, dashboard.get("title", ""), ha="left", va="top", fontsize=14, fontweight="bold")
    fig.text(0.08 / fig_w, 1 - 0.45 / fig_h,
             f"Rendered by scripts/render-dashboard.py from Prometheus query results, not a Grafana screenshot.   "
             f"{when(start)} to {when(end)} UTC   vip=~\"{args.vip}\"   $__rate_interval={args.rate_interval}",
             ha="left", va="top", fontsize=8.5, color="#464C54")
    for panel in panels:
        box = panel_box(fig, panel, fig_w, fig_h)
        kind = panel["type"]
        if kind == "timeseries":
            draw_timeseries(fig, panel, box, args, start, end, step, fig_w, fig_h)
        elif kind == "stat":
            draw_stat(fig, panel, box, args, end, step)
        elif kind == "table":
            draw_table(fig, panel, box, args, end, step, fig_w, fig_h)
        else:
            print(f"panel {panel['title']!r}: type {kind} is not drawn", file=sys.stderr)
            no_data(fig, box)
    fig.savefig(args.output, dpi=110, facecolor=fig.get_facecolor())
    print(f"wrote {args.output}: {len(panels)} panels, {when(start)} to {when(end)} UTC")


if __name__ == "__main__":
    main()
