"""ECharts options built on the server from the numbers the services return: the page carries the option as
JSON (``data-option``) and ``console.js`` hands it to ``echarts.init(...).setOption``. No functions in options
(they could not cross JSON), so formatters are ECharts template strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bars", "funnel", "heatmap", "lines", "pie", "yuan"]

_GRID = {"left": 48, "right": 16, "top": 36, "bottom": 32, "containLabel": True}
_PALETTE = ["#1a7f5a", "#175cd3", "#f79009", "#b42318", "#7a5af8", "#0e9384", "#667085"]


def _base(title: str | None) -> dict[str, Any]:
    option: dict[str, Any] = {"color": _PALETTE, "animationDuration": 300, "tooltip": {"trigger": "axis"},
                              "grid": _GRID}
    if title:
        option["title"] = {"text": title, "textStyle": {"fontSize": 13}}
    return option


def lines(categories: Sequence[str], series: Mapping[str, Sequence[float | int | None]], *,
          title: str | None = None, area: bool = False, percent: bool = False,
          symbols: bool = False) -> dict[str, Any]:
    """``symbols``: mark every point (a sparse series — one day with data among empty ones — is otherwise
    invisible, since a line needs two points)."""
    option = _base(title)
    option.update({
        "legend": {"top": 4, "right": 8} if len(series) > 1 else {"show": False},
        "xAxis": {"type": "category", "data": list(categories), "boundaryGap": False},
        "yAxis": {"type": "value", **({"max": 100, "axisLabel": {"formatter": "{value}%"}} if percent else {})},
        "series": [{"name": name, "type": "line", "data": list(values), "smooth": True, "showSymbol": symbols,
                    **({"areaStyle": {"opacity": 0.15}} if area else {})} for name, values in series.items()],
    })
    return option


def yuan(fen: int) -> float:
    """Fen as yuan for a chart axis (a chart shows magnitudes; the table beside it shows the exact amount)."""
    return round(fen / 100, 2)


def bars(categories: Sequence[str], series: Mapping[str, Sequence[float | int | None]], *,
         title: str | None = None, stacked: bool = False, horizontal: bool = False,
         percent: bool = False) -> dict[str, Any]:
    option = _base(title)
    cat_axis = {"type": "category", "data": list(categories)}
    val_axis: dict[str, Any] = {"type": "value"}
    if percent:
        val_axis.update({"max": 100, "axisLabel": {"formatter": "{value}%"}})
    option.update({
        "legend": {"top": 4, "right": 8} if len(series) > 1 else {"show": False},
        "xAxis": val_axis if horizontal else cat_axis,
        "yAxis": cat_axis if horizontal else val_axis,
        "series": [{"name": name, "type": "bar", "data": list(values), **({"stack": "total"} if stacked else {})}
                   for name, values in series.items()],
    })
    return option


def pie(data: Mapping[str, float | int], *, title: str | None = None) -> dict[str, Any]:
    option = _base(title)
    option["tooltip"] = {"trigger": "item"}
    option["series"] = [{"type": "pie", "radius": ["40%", "70%"],
                         "data": [{"name": k, "value": v} for k, v in data.items()]}]
    return option


def funnel(steps: Sequence[tuple[str, int]], *, title: str | None = None) -> dict[str, Any]:
    option = _base(title)
    option["tooltip"] = {"trigger": "item"}
    option["series"] = [{"type": "funnel", "left": "10%", "width": "80%", "sort": "none", "minSize": "8%",
                         "label": {"show": True, "position": "inside", "formatter": "{b}: {c}"},
                         "data": [{"name": name, "value": value} for name, value in steps]}]
    return option


def heatmap(xs: Sequence[str], ys: Sequence[str], cells: Sequence[tuple[int, int, float | None]], *,
            title: str | None = None, max_value: float = 100) -> dict[str, Any]:
    """``cells``: (x index, y index, value); values as percentages by default (retention)."""
    option = _base(title)
    option.update({
        "tooltip": {"position": "top"},
        "xAxis": {"type": "category", "data": list(xs), "splitArea": {"show": True}},
        "yAxis": {"type": "category", "data": list(ys), "splitArea": {"show": True}, "inverse": True},
        "visualMap": {"min": 0, "max": max_value, "calculable": False, "orient": "horizontal", "left": "center",
                      "bottom": 0, "inRange": {"color": ["#ecfdf3", "#1a7f5a"]}},
        "series": [{"type": "heatmap", "data": [[x, y, v] for x, y, v in cells if v is not None],
                    "label": {"show": True, "formatter": "{@[2]}"}}],
    })
    option["grid"] = {**_GRID, "bottom": 56}
    return option
