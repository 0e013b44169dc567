"""Plotly figures for the report: DataFrames in, go.Figure out.

Figures only draw what they are given; values arrive already scaled (points, %)
and already computed by the analyses. Hover text is escaped because plotly
renders a small HTML subset in it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

FONT = dict(
    family="system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
    size=13,
    color="#1f2933",
)
COLORS = [
    "#3b6ea8", "#e07b39", "#4c9a6a", "#c44e52", "#8172b2",
    "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd",
]
TEMPLATE = "plotly_white"
_EMPTY = go.layout.Template()
SEQUENTIAL = "Blues"
DIVERGING = "RdBu"  # red below zero, blue above


def esc(value: object) -> str:
    return html.escape(str(value), quote=False)


def template_json() -> str:
    """The shared plotly theme, sent once per page; each figure leaves its own template empty."""
    return pio.json.to_json_plotly(pio.templates[TEMPLATE].to_plotly_json())


def _style(fig: go.Figure, height: int, top: int = 30, **layout) -> go.Figure:
    fig.update_layout(
        template=_EMPTY,
        font=FONT,
        height=height,
        margin=dict(l=10, r=10, t=top, b=10),
        hoverlabel=dict(font=dict(family=FONT["family"])),
        **layout,
    )
    return fig


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def heatmap(
    df: pd.DataFrame,
    *,
    colorbar: str,
    label: Callable[[float], str],
    diverging: bool = False,
    hover: list[list[str]] | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """Rows top to bottom as in `df`, columns on top; a diverging scale is centred at 0.

    Cell labels are formatted here, not by plotly: its texttemplate drops d3's sign flag.
    """
    z = df.to_numpy(dtype=float)
    labels = [[label(v) if np.isfinite(v) else "" for v in row] for row in z]
    if diverging:
        finite = np.abs(z[np.isfinite(z)])
        bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        zmin, zmax = -bound, bound
    trace = go.Heatmap(
        z=z,
        x=[str(c) for c in df.columns],
        y=[str(i) for i in df.index],
        colorscale=DIVERGING if diverging else SEQUENTIAL,
        zmin=zmin,
        zmax=zmax,
        xgap=2,
        ygap=2,
        text=labels,
        texttemplate="%{text}",
        colorbar=dict(title=dict(text=colorbar), thickness=12),
    )
    if hover is None:
        trace.update(hovertemplate="%{y} → %{x}: %{text}<extra></extra>")
    else:
        trace.update(customdata=hover, hovertemplate="%{customdata}<extra></extra>")
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", ticksuffix=" ", showgrid=False)
    fig.update_xaxes(side="top", showgrid=False, tickangle=-30 if len(df.columns) > 6 else 0)
    return _style(fig, height=110 + 34 * len(df.index), top=70)


def scree(ratio: pd.Series) -> go.Figure:
    """Explained variance per component as bars, the running total as a line (both in %)."""
    names = [str(i) for i in ratio.index]
    fig = go.Figure(
        [
            go.Bar(x=names, y=ratio.to_numpy() * 100, name="this component", marker_color=color(0),
                   hovertemplate="%{x}: %{y:.1f}%<extra></extra>"),
            go.Scatter(x=names, y=ratio.cumsum().to_numpy() * 100, name="cumulative", mode="lines+markers",
                       line=dict(color=color(1)), hovertemplate="up to %{x}: %{y:.1f}%<extra></extra>"),
        ]
    )
    fig.update_yaxes(title_text="variance explained (%)", range=[0, 105])
    return _style(fig, height=320, legend=dict(orientation="h", y=1.12, x=0))


def biplot(scores: pd.DataFrame, loadings: pd.DataFrame, x: str, y: str) -> go.Figure:
    """Adapters as points on two components; tasks as arrows, scaled to the points' spread."""
    fig = go.Figure(
        go.Scatter(
            x=scores[x], y=scores[y], mode="markers+text", text=[esc(i) for i in scores.index],
            textposition="top center", marker=dict(size=11, color=color(0), line=dict(color="white", width=1)),
            name="adapters", hovertemplate="%{text}<br>" + f"{x}: " + "%{x:.3f}<br>" + f"{y}: " + "%{y:.3f}<extra></extra>",
        )
    )
    spread = float(np.nanmax(np.abs(scores[[x, y]].to_numpy()))) if len(scores) else 1.0
    reach = float(np.nanmax(np.hypot(loadings[x], loadings[y]))) if len(loadings) else 1.0
    k = 0.9 * (spread or 1.0) / (reach or 1.0)
    tips = loadings[[x, y]] * k
    for task, (tx, ty) in tips.iterrows():
        fig.add_annotation(x=tx, y=ty, ax=0, ay=0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.5, arrowcolor=color(1))
        fig.add_annotation(x=tx, y=ty, xref="x", yref="y", text=esc(task), showarrow=False,
                           font=dict(color=color(1), size=12), xshift=12 if tx >= 0 else -12,
                           xanchor="left" if tx >= 0 else "right", yanchor="middle")
    both = pd.concat([scores[[x, y]], tips])
    pad = 0.15 * float(np.nanmax(np.abs(both.to_numpy())) or 1.0)
    fig.update_xaxes(title_text=x, zeroline=True, zerolinecolor="#bbb",
                     range=[both[x].min() - pad, both[x].max() + pad])
    fig.update_yaxes(title_text=y, zeroline=True, zerolinecolor="#bbb",
                     range=[both[y].min() - pad, both[y].max() + pad])
    return _style(fig, height=520, showlegend=False)


def profiles(scores: pd.DataFrame) -> go.Figure:
    """One group of bars per adapter, one bar per component: the adapter's trait profile."""
    fig = go.Figure(
        [
            go.Bar(x=[str(i) for i in scores.index], y=scores[pc], name=str(pc), marker_color=color(i),
                   hovertemplate="%{x}<br>" + f"{esc(pc)}: " + "%{y:+.3f}<extra></extra>")
            for i, pc in enumerate(scores.columns)
        ]
    )
    fig.update_yaxes(title_text="weight", zeroline=True, zerolinecolor="#888")
    return _style(fig, height=360, barmode="group", legend=dict(orientation="h", y=1.12, x=0))


def with_dropdown(fig: go.Figure, groups: list[tuple[str, list[int]]], label: str) -> go.Figure:
    """Show one group of traces at a time, chosen from a dropdown (no dropdown for one group)."""
    n = len(fig.data)
    for i, trace in enumerate(fig.data):
        trace.visible = i in groups[0][1]
    if len(groups) > 1:
        buttons = [
            dict(label=name, method="update", args=[{"visible": [i in idx for i in range(n)]}])
            for name, idx in groups
        ]
        fig.update_layout(
            updatemenus=[dict(buttons=buttons, x=0, xanchor="left", y=1.02, yanchor="bottom",
                              bgcolor="white", bordercolor="#ccd")],
            annotations=[dict(text=label, x=0, xref="paper", y=1.13, yref="paper", showarrow=False,
                              xanchor="left", yanchor="bottom", font=dict(size=12, color="#52606d"))],
        )
    return fig


def length_curves(density: pd.DataFrame, order: list[str], measure: str) -> go.Figure:
    """Per target task: length densities of the reference answers (black), the base model
    (grey), each adapter's outputs (solid) and its source's training answers (dashed)."""
    colors = {name: color(i) for i, name in enumerate(order)}
    styles = {"target_reference": dict(color="#111", width=3), "base": dict(color="#8c8c8c", width=2.5)}
    fig = go.Figure()
    groups = []
    for task, rows in density.groupby("task", sort=True):
        start = len(fig.data)
        for (kind, group), curve in rows.groupby(["kind", "group"], sort=False):
            line = styles.get(kind) or dict(color=colors.get(group, "#555"), width=2,
                                            dash="dash" if kind == "source" else "solid")
            name = {"target_reference": "reference answers", "base": "base model"}.get(
                kind, f"{group} ({'training answers' if kind == 'source' else 'outputs'})")
            fig.add_trace(go.Scatter(x=curve["x"], y=curve["density"], mode="lines", name=name, line=line,
                                     hovertemplate=esc(name) + ": %{x:.0f}<extra></extra>"))
        groups.append((str(task), list(range(start, len(fig.data)))))
    fig.update_xaxes(title_text=f"answer length ({measure})")
    fig.update_yaxes(title_text="density", showticklabels=False)
    return _style(with_dropdown(fig, groups, "target task"), height=440, top=70,
                  legend=dict(font=dict(size=11)))


def label_length_curves(density: pd.DataFrame, measure: str) -> go.Figure:
    """Per dataset: text-length density of each label's texts."""
    fig = go.Figure()
    groups = []
    keys = ["dataset", "role"] if "role" in density.columns else ["dataset"]
    for key, rows in density.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        start = len(fig.data)
        for j, (label, curve) in enumerate(rows.groupby("label", sort=True)):
            fig.add_trace(go.Scatter(x=curve["x"], y=curve["density"], mode="lines", name=str(label),
                                     line=dict(color=color(j), width=2),
                                     hovertemplate=esc(label) + ": %{x:.0f}<extra></extra>"))
        groups.append((" · ".join(str(k) for k in key), list(range(start, len(fig.data)))))
    fig.update_xaxes(title_text=f"text length ({measure})")
    fig.update_yaxes(title_text="density", showticklabels=False)
    return _style(with_dropdown(fig, groups, "dataset"), height=380, top=70)


def class_shares(shares: dict[str, pd.DataFrame]) -> go.Figure:
    """Per task: stacked bars of predicted-label shares (%), one bar per model, gold on top."""
    fig = go.Figure()
    groups = []
    for task, table in shares.items():
        start = len(fig.data)
        for j, label in enumerate(table.columns):
            fig.add_trace(go.Bar(
                y=[str(i) for i in table.index], x=table[label] * 100, name=str(label), orientation="h",
                marker_color=color(j), legendgroup=str(label),
                hovertemplate="%{y}: " + esc(label) + " %{x:.1f}%<extra></extra>",
            ))
        groups.append((str(task), list(range(start, len(fig.data)))))
    rows = max(len(t.index) for t in shares.values())
    fig.update_xaxes(title_text="share of answers (%)", range=[0, 100])
    fig.update_yaxes(autorange="reversed", ticksuffix=" ")
    fig = with_dropdown(fig, groups, "target task")
    return _style(fig, height=150 + 28 * rows, barmode="stack", top=70,
                  legend=dict(orientation="h", y=-0.25, x=0))


def confusion_grid(mats: dict[str, pd.DataFrame], counts: dict[str, pd.DataFrame]) -> go.Figure:
    """Small row-normalised confusion matrices (gold rows, predicted columns), one per model."""
    names = list(mats)
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[esc(n) for n in names],
                        horizontal_spacing=0.06, vertical_spacing=0.16 if nrows > 1 else 0.1)
    for k, name in enumerate(names):
        m, c = mats[name], counts[name]
        hover = [[f"gold {esc(g)} → {esc(p)}: {int(c.loc[g, p])} ({m.loc[g, p] * 100:.0f}%)" for p in m.columns]
                 for g in m.index]
        fig.add_trace(
            go.Heatmap(z=m.to_numpy() * 100, x=[str(p) for p in m.columns], y=[str(g) for g in m.index],
                       zmin=0, zmax=100, colorscale=SEQUENTIAL, showscale=k == 0, xgap=1, ygap=1,
                       text=hover, hovertemplate="%{text}<extra></extra>", texttemplate="%{z:.0f}",
                       colorbar=dict(title=dict(text="% of gold"), thickness=10)),
            row=k // cols + 1, col=k % cols + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font=dict(size=12))
    return _style(fig, height=80 + 230 * nrows, top=60)


def similarity_vs_gain(points: pd.DataFrame) -> go.Figure:
    """Each point: one (adapter, target) cell, its source's similarity to the target against its gain."""
    kinds = list(dict.fromkeys(points["kind"]))
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"{esc(k)} similarity" for k in kinds])
    for j, kind in enumerate(kinds):
        rows = points[points["kind"] == kind]
        hover = [f"{esc(a)} → {esc(t)}<br>similarity {s:.3f}<br>gain {g:+.1f} pts"
                 for a, t, s, g in zip(rows["model"], rows["task"], rows["similarity"], rows["gain"])]
        fig.add_trace(go.Scatter(x=rows["similarity"], y=rows["gain"], mode="markers", text=hover,
                                 hovertemplate="%{text}<extra></extra>", showlegend=False,
                                 marker=dict(size=9, color=color(j), opacity=0.8)), row=1, col=j + 1)
        fig.update_xaxes(title_text="similarity of source to target", row=1, col=j + 1)
    fig.update_yaxes(title_text="gain (points)", zeroline=True, zerolinecolor="#888", row=1, col=1)
    return _style(fig, height=380, top=40)


def ratio_bars(groups: dict[str, pd.DataFrame]) -> go.Figure:
    """Per (adapter, target): adapter/base success-rate ratio per dependency relation; 1 = no change."""
    fig = go.Figure()
    spans = []
    for name, rows in groups.items():
        start = len(fig.data)
        rows = rows.sort_values("ratio", ascending=False)
        hover = [f"{esc(r)}: ×{q:.2f} (n = {int(n)})" for r, q, n in zip(rows["relation"], rows["ratio"], rows["n"])]
        fig.add_trace(go.Bar(x=rows["relation"].astype(str), y=rows["ratio"], text=hover,
                             hovertemplate="%{text}<extra></extra>", textposition="none",
                             marker_color=[color(0) if q >= 1 else color(3) for q in rows["ratio"]],
                             showlegend=False))
        spans.append((name, [start]))
    fig.add_hline(y=1, line=dict(color="#555", dash="dot"))
    fig.update_yaxes(title_text="adapter ÷ base success rate")
    return _style(with_dropdown(fig, spans, "adapter → target"), height=400, top=70)


def predicted_vs_actual(rows: pd.DataFrame) -> go.Figure:
    """Predicted against measured gain (points); the dotted diagonal is a perfect prediction."""
    hover = [f"{esc(m)} → {esc(t)}<br>predicted {p:+.1f}<br>measured {a:+.1f}"
             for m, t, p, a in zip(rows["model"], rows["task"], rows["predicted"], rows["actual"])]
    lo = float(min(rows["predicted"].min(), rows["actual"].min(), 0))
    hi = float(max(rows["predicted"].max(), rows["actual"].max(), 0))
    pad = (hi - lo) * 0.05 or 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo - pad, hi + pad], y=[lo - pad, hi + pad], mode="lines", hoverinfo="skip",
                             line=dict(color="#999", dash="dot"), showlegend=False))
    for j, (model, part) in enumerate(rows.groupby("model", sort=True)):
        idx = part.index
        fig.add_trace(go.Scatter(x=part["predicted"], y=part["actual"], mode="markers", name=str(model),
                                 text=[hover[rows.index.get_loc(i)] for i in idx],
                                 hovertemplate="%{text}<extra></extra>", marker=dict(size=9, color=color(j))))
    fig.update_xaxes(title_text="predicted gain (points)", range=[lo - pad, hi + pad])
    fig.update_yaxes(title_text="measured gain (points)", range=[lo - pad, hi + pad])
    return _style(fig, height=460, legend=dict(title=dict(text="held-out adapter")))


def training_curves(curves: pd.DataFrame) -> go.Figure:
    """Per adapter: training loss per step (solid) and validation loss (dashed, with markers);
    a ring marks the adapter kept."""
    fig = go.Figure()
    groups = []
    for adapter, rows in curves.groupby("adapter", sort=False):
        start = len(fig.data)
        for kind, curve in rows.groupby("kind", sort=False):
            validation = kind == "validation"
            fig.add_trace(go.Scatter(
                x=curve["step"], y=curve["loss"], mode="lines+markers" if validation else "lines", name=f"{kind} loss",
                line=dict(color=color(1 if validation else 0), width=2, dash="dash" if validation else "solid"),
                hovertemplate=f"{kind} loss at step %{{x}}: %{{y:.3f}}<extra></extra>"))
        kept = rows[rows["kept"]]
        if len(kept):
            fig.add_trace(go.Scatter(x=kept["step"], y=kept["loss"], mode="markers", name="adapter kept",
                                     marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="#111", width=2)),
                                     hovertemplate="kept: step %{x}<extra></extra>"))
        groups.append((str(adapter), list(range(start, len(fig.data)))))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss per answer token")
    return _style(with_dropdown(fig, groups, "adapter"), height=380, top=70)
