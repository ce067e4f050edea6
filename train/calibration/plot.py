"""The per-step error figure: matplotlib when installed, else a plain Pillow line chart.

`series` are `(label, xs, ys)`; each panel is `(title, x label, y label, series)`. The y axis is
logarithmic (errors span decades). matplotlib is not a project dependency; without it the Pillow
fallback draws the same data (axes, ticks, legend) and says so in the returned backend name.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

Series = tuple[str, list[float], list[float]]
Panel = tuple[str, str, str, list[Series]]

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_panels(path: str | Path, panels: list[Panel]) -> str:
    """Writes the PNG; returns the backend used ('matplotlib' or 'pillow')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pillow(path, panels)
        return "pillow"
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (title, xl, yl, series) in zip(axes[0], panels, strict=True):
        for label, xs, ys in series:
            ax.plot(xs, np.maximum(ys, 1e-8), marker="o", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "matplotlib"


def _pillow(path, panels: list[Panel]) -> None:
    from PIL import Image, ImageDraw

    pw, ph = 560, 420
    img = Image.new("RGB", (pw * len(panels), ph), "white")
    draw = ImageDraw.Draw(img)
    for k, (title, xl, yl, series) in enumerate(panels):
        ox = k * pw
        left, right, top, bottom = ox + 70, ox + pw - 20, 30, ph - 120
        xs = [x for _, sx, _ in series for x in sx]
        ys = [max(y, 1e-8) for _, _, sy in series for y in sy]
        if not xs:
            continue
        x0, x1 = min(xs), max(xs)
        x1 = x1 if x1 > x0 else x0 + 1
        y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        y1 = y1 if y1 > y0 else y0 + 1
        def fx(x, left=left, right=right, x0=x0, x1=x1):
            return left + (x - x0) / (x1 - x0) * (right - left)

        def fy(y, top=top, bottom=bottom, y0=y0, y1=y1):
            return bottom - (math.log10(max(y, 1e-8)) - y0) / (y1 - y0) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline="black")
        for e in range(y0, y1 + 1):
            yy = fy(10.0**e)
            draw.line([left, yy, right, yy], fill=(220, 220, 220))
            draw.text((ox + 8, yy - 6), f"1e{e}", fill="black")
        for x in np.linspace(x0, x1, 6):
            draw.text((fx(x) - 10, bottom + 4), f"{x:.0f}", fill="black")
        draw.text((ox + (pw - 6 * len(title)) // 2, 8), title, fill="black")
        draw.text(((left + right) // 2 - 3 * len(xl), bottom + 20), xl, fill="black")
        draw.text((ox + 4, top - 16), yl, fill="black")
        for i, (label, sx, sy) in enumerate(series):
            c = COLOURS[i % len(COLOURS)]
            pts = [(fx(x), fy(y)) for x, y in zip(sx, sy, strict=True)]
            if len(pts) > 1:
                draw.line(pts, fill=c, width=2)
            for px, py in pts:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=c)
            ly = bottom + 38 + 12 * (i % 6)
            lx = left + (i // 6) * 240
            draw.line([lx, ly + 5, lx + 18, ly + 5], fill=c, width=2)
            draw.text((lx + 22, ly), label, fill="black")
    img.save(path)
