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
from PIL import Image, ImageDraw

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


def colormap(values: np.ndarray) -> np.ndarray:
    """A perceptual dark-blue -> teal -> yellow ramp for `values` in [0, 1] (H x W -> H x W x 3 uint8)."""
    stops = np.array([[0.05, 0.03, 0.25], [0.13, 0.45, 0.56], [0.2, 0.72, 0.47], [0.99, 0.9, 0.14]])
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return ((stops[low] * (1 - frac) + stops[low + 1] * frac) * 255).astype(np.uint8)


def save_grid_heatmap(cells: Dict[str, Dict[Cell, float]], path: str, metric: str, title: str, cell: int = 72,
                      order: Optional[Callable[[str], object]] = None) -> bool:
    """
    A heat map of `metric` per cell (`log10` colour scale shared by the methods; bright is lower, i.e. better), one
    panel per method, the value written in each cell and NaN cells crossed out. Returns `False` unless the grid has
    exactly two options.
    """
    if not cells:
        return False
    names = sorted(cells, key=order)
    keys = sorted({k for c in cells.values() for k in c})
    options = [option for option, _ in keys[0]]
    if len(options) != 2:
        return False
    rows_v = sorted({dict(k)[options[0]] for k in keys})
    cols_v = sorted({dict(k)[options[1]] for k in keys})
    values = [v for c in cells.values() for v in c.values() if math.isfinite(v)] or [1.0]
    lo, hi = math.log10(max(min(values), 1e-3)), math.log10(max(max(values), 1e-3))
    margin_left, margin_top, gap = 90, 40, 24
    width = margin_left + len(names) * (len(cols_v) * cell + gap)
    height = margin_top + len(rows_v) * cell + 40
    fig = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(fig)
    for p, name in enumerate(names):
        x0 = margin_left + p * (len(cols_v) * cell + gap)
        draw.text((x0, 4), name, fill="black")
        for j, cv in enumerate(cols_v):
            draw.text((x0 + j * cell + 4, margin_top - 14), f"{options[1]}={cv:g}", fill="black")
        for i, rv in enumerate(rows_v):
            if p == 0:
                draw.text((4, margin_top + i * cell + cell // 2 - 6), f"{options[0]}={rv:g}", fill="black")
            for j, cv in enumerate(cols_v):
                v = cells[name].get(tuple(sorted({options[0]: rv, options[1]: cv}.items())))
                box = (x0 + j * cell, margin_top + i * cell, x0 + (j + 1) * cell - 2, margin_top + (i + 1) * cell - 2)
                if v is None:
                    draw.rectangle(box, outline=(180, 180, 180))
                elif not math.isfinite(v):
                    draw.rectangle(box, fill=(90, 90, 90))
                    draw.line((box[0], box[1], box[2], box[3]), fill="white", width=2)
                    draw.text((box[0] + 6, box[1] + cell // 2 - 6), "NaN", fill="white")
                else:
                    t = 0.0 if hi == lo else (math.log10(max(v, 1e-3)) - lo) / (hi - lo)
                    colour = tuple(int(c) for c in colormap(np.array([1 - t]))[0])
                    draw.rectangle(box, fill=colour)
                    draw.text((box[0] + 6, box[1] + cell // 2 - 6), f"{v:.1f}", fill="black" if t < 0.5 else "white")
    draw.text((4, height - 20), f"{metric} ({title}); colour: log10 {metric}, bright = lower (better)",
              fill="black")
    fig.save(path)
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
