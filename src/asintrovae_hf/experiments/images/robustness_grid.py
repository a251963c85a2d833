"""
Robustness grids: a metric where lower is better (the toy KL, the digits FID) per cell of an option grid and per
method, how many cells come near the best, which cells collapsed, and a heat map. The toy benchmark and the digits
benchmark both report their grids with these functions.
"""

import argparse
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ...objectives.config import ObjectiveConfig, option_names

Cell = Tuple[Tuple[str, float], ...]  # ((option, value), ...) sorted by option name


def grid_cells(records: List[Dict], metric: str) -> Dict[str, Dict[Cell, float]]:
    """
    `name -> {cell: mean of records[metric] over seeds}` for the records with grid `overrides`; a NaN (a run that
    diverged) keeps the cell NaN.
    """
    cells: Dict[str, Dict[Cell, List[float]]] = {}
    for r in records:
        if r.get("overrides"):
            cell = tuple(sorted(r["overrides"].items()))
            cells.setdefault(r.get("name", r.get("method")), {}).setdefault(cell, []).append(float(r[metric]))
    return {name: {cell: float(np.mean(v)) for cell, v in c.items()} for name, c in cells.items()}


def _finite_min(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else math.nan


def grid_summary(cells: Dict[str, Dict[Cell, float]], near: float = 1.5,
                 collapse: Optional[float] = 2.0) -> List[Dict]:
    """
    Per method: its number of cells, its best cell's value, the cells within `near` x of the best cell of all
    methods and of its own best, and (with `collapse`) the cells that collapsed: more than `collapse` x the best cell
    of all methods, or NaN.
    """
    best = _finite_min(v for c in cells.values() for v in c.values())
    rows = []
    for name, c in cells.items():
        own = _finite_min(c.values())
        row = {"name": name, "cells": len(c), "best": own,
               "near_overall": sum(math.isfinite(v) and v <= near * best for v in c.values()),
               "near_own": sum(math.isfinite(v) and v <= near * own for v in c.values())}
        if collapse is not None:
            row["collapsed"] = [cell for cell, v in sorted(c.items())
                                if not math.isfinite(v) or v > collapse * best]
        rows.append(row)
    return rows


def _cell_text(cell: Cell) -> str:
    return ", ".join(f"{option}={value:g}" for option, value in cell)


def grid_markdown(cells: Dict[str, Dict[Cell, float]], metric: str, title: str, near: float = 1.5,
                  collapse: Optional[float] = 2.0, order: Optional[Callable[[str], object]] = None) -> str:
    """The value of every cell per method, then the [`grid_summary`] of each method, as Markdown tables."""
    names = sorted(cells, key=order)
    keys = sorted({k for n in names for k in cells[n]})
    options = [option for option, _ in keys[0]]
    out = [f"| {' | '.join(options)} | " + " | ".join(f"{n} {metric}" for n in names) + " |",
           "| " + " | ".join("---" for _ in options + names) + " |"]
    for key in keys:
        values = [cells[n].get(key) for n in names]
        out.append("| " + " | ".join(f"{v:g}" for _, v in key) + " | " +
                   " | ".join("" if v is None else f"{v:.2f}" for v in values) + " |")
    header = (f"| {title}: method | cells | best cell {metric} | within {near:g}x of the best cell of all methods "
              f"| within {near:g}x of its own best cell |")
    if collapse is not None:
        header += f" collapsed (> {collapse:g}x the best cell of all methods, or NaN) |"
    out += ["", header, "| --- " * (6 if collapse is not None else 5) + "|"]
    summary = {row["name"]: row for row in grid_summary(cells, near, collapse)}
    for n in names:
        row = summary[n]
        line = (f"| {n} | {row['cells']} | {row['best']:.2f} | {row['near_overall']}/{row['cells']} | "
                f"{row['near_own']}/{row['cells']} |")
        if collapse is not None:
            line += f" {'; '.join(_cell_text(c) for c in row['collapsed']) or 'none'} |"
        out.append(line)
    return "\n".join(out) + "\n\n"


def save_grid_heatmap(cells: Dict[str, Dict[Cell, float]], path: str, metric: str, title: str,
                      order: Optional[Callable[[str], object]] = None) -> bool:
    """
    A heat map of `metric` per cell, one panel per method, on one log colour scale with its colour bar (bright is
    lower, i.e. better), the value written in each cell and NaN cells (diverged runs) hatched. Returns `False`
    unless the grid has exactly two options.
    """
    if not cells:
        return False
    names = sorted(cells, key=order)
    keys = sorted({k for c in cells.values() for k in c})
    options = [option for option, _ in keys[0]]
    if len(options) != 2:
        return False
    from ..figures import method_label, new_figure  # matplotlib is checked there

    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    rows_v = sorted({dict(k)[options[0]] for k in keys})
    cols_v = sorted({dict(k)[options[1]] for k in keys})
    values = [v for c in cells.values() for v in c.values() if math.isfinite(v) and v > 0] or [1.0]
    norm = LogNorm(vmin=min(values), vmax=max(values) if max(values) > min(values) else min(values) * 10)
    fig = new_figure(1.2 + 2.6 * len(names), 3.3)
    axes = fig.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, names):
        recorded = [[tuple(sorted({options[0]: rv, options[1]: cv}.items())) in cells[name] for cv in cols_v]
                    for rv in rows_v]
        grid = np.array([[cells[name].get(tuple(sorted({options[0]: rv, options[1]: cv}.items())), np.nan)
                          for cv in cols_v] for rv in rows_v], dtype=float)
        # reversed colours: bright = low = better, as in the tables' bold cells
        image = ax.imshow(np.ma.masked_invalid(grid), norm=norm, cmap="viridis_r", origin="lower")
        for i in range(len(rows_v)):
            for j in range(len(cols_v)):
                v = grid[i, j]
                if math.isfinite(v):
                    dark = norm(v) > 0.5
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
                elif recorded[i][j]:  # a run stopped by a non-finite loss
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, hatch="xx", fill=False, edgecolor="0.4"))
                    ax.text(j, i, "NaN", ha="center", va="center", fontsize=8)
                else:
                    ax.text(j, i, "not run", ha="center", va="center", fontsize=7, color="0.4")
        ax.set_xticks(range(len(cols_v)), [f"{v:g}" for v in cols_v])
        ax.set_yticks(range(len(rows_v)), [f"{v:g}" for v in rows_v])
        ax.set_xlabel(options[1])
        ax.set_title(method_label(name), fontsize=9)
    axes[0].set_ylabel(options[0])
    bar = fig.colorbar(image, ax=list(axes), label=f"{metric} (log scale; lower is better)", shrink=0.9)
    bar.set_ticks([t for e in range(math.floor(math.log10(norm.vmin)), math.ceil(math.log10(norm.vmax)) + 1)
                   for t in (10.0 ** e, 2 * 10.0 ** e, 5 * 10.0 ** e) if norm.vmin <= t <= norm.vmax])
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"{metric} per cell: {title}", fontsize=10)
    fig.savefig(path, dpi=120)
    return True


def parse_grid_option(text: str) -> Tuple[str, List]:
    """
    `"beta_neg=64,256,1024"` -> `("beta_neg", [64.0, 256.0, 1024.0])`: an objective option and its values, typed
    as [`ObjectiveConfig`] types it: the `type=` of a `--grid` command-line option, so it raises `argparse`'s error.
    """
    name, _, values = text.partition("=")
    if name not in option_names() or name == "objective" or not values:
        raise argparse.ArgumentTypeError(f"expected option=v1,v2,... with an objective option; got {text!r}")
    kind = {f.name: f.type for f in dataclasses.fields(ObjectiveConfig)}[name]
    try:
        return name, [kind(v) for v in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes {kind.__name__} values; got {values!r}") from None
