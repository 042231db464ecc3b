"""Report figures as deterministic PNG bytes (matplotlib Agg; no dates or software tag in the files).

Benchmark results file (written by `harness bench`, read here), JSON:
    {"rows": [{"backbone": "zigma", "tokens": 256, "train_images_per_s": 812.0, "step_ms": 39.4,
               "peak_memory_gb": 1.2, "device": "NVIDIA H100 80GB HBM3", ...}, ...]}
`tokens` is the sequence length (patches x frames); a row may give `train_images_per_s` or `step_ms` or both, and
`peak_memory_gb` may be absent. One line per `variant` (else per `backbone`) and device; rows whose `status` is
not "ok" are left out. Other keys (grid, batch, dtype, scan) are kept in summary.json but not plotted.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .stats import means_front, pareto_front
from .tables import MetricInfo, Table, lower_title

__all__ = ["STYLE", "arm_styles", "bench_plot", "captioned_grid", "compute_plot", "frame_strip", "grid_tiles",
           "history_plot", "pareto_plot", "png_bytes", "seed_panel"]

DPI = 110
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "legend.fontsize": 8, "legend.frameon": False, "figure.dpi": DPI, "savefig.dpi": DPI,
    "path.simplify": False, "svg.hashsalt": "zigma-harness",
}
_METADATA = {"Software": None}


def png_bytes(draw: Callable[[], Any]) -> bytes:
    """Run draw() (which makes one figure) under the report style; return its PNG without metadata."""
    with matplotlib.rc_context(STYLE):
        fig = draw()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata=_METADATA, bbox_inches="tight", pad_inches=0.1)
        plt.close(fig)
    return compact_png(buf.getvalue())


def compact_png(png: bytes) -> bytes:
    """The same pixels in fewer bytes: an alpha channel that is opaque everywhere is dropped, and an image of at
    most 256 colours is stored with an exact palette (sample grids: a few dozen grey levels). Lossless."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
    if im.mode == "RGBA" and im.getchannel("A").getextrema() == (255, 255):
        im = im.convert("RGB")
    if im.mode == "RGB":
        rgb = np.asarray(im, dtype=np.uint32)
        keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        colours, index = np.unique(keys, return_inverse=True)
        if len(colours) <= 256:
            im = Image.fromarray(index.reshape(keys.shape).astype(np.uint8), mode="P")
            im.putpalette(np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], 1).astype(np.uint8)
                          .ravel().tolist())
    out = io.BytesIO()
    im.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def history_plot(curves: dict[str, list[list[tuple[int, float]]]], info: MetricInfo, n_seeds: dict[str, int],
                 models: dict[str, str] | None = None) -> bytes:
    """Mean over seeds vs training step per variant (band: min-max over seeds); curves: variant -> seeds; a
    model's variants (`models`: variant -> model) share a colour, one line style each (arm_styles)."""
    styles = arm_styles(list(curves), models or {})

    def draw():
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for variant, seeds in curves.items():
            color, ls = styles[variant]
            steps = sorted({s for pts in seeds for s, _ in pts})
            by_step = [[v for pts in seeds for s, v in pts if s == st] for st in steps]
            mean = [sum(v) / len(v) for v in by_step]
            ax.plot(steps, mean, color=color, lw=1.4, ls=ls,
                    label=f"{variant} (n={n_seeds.get(variant, len(seeds))})")
            if len(seeds) > 1:
                ax.fill_between(steps, [min(v) for v in by_step], [max(v) for v in by_step], color=color,
                                alpha=0.15, lw=0)
        values = [v for s in curves.values() for p in s for _, v in p]
        # a loss that falls several-fold (most of it in the first steps) on log y, so the end is not squashed flat
        if info.name == "train_loss" and min(values) > 0 and max(values) / min(values) > LOG_RATIO:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))  # labels inside one decade
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{info.title} {info.arrow}")
        ax.set_title(f"{info.title} vs training step (mean over seeds; band: min–max)")
        # a long legend (many curves, or labels with budget keys) goes below the axes, where it covers no curve
        if len(curves) > LEGEND_INSIDE or max(map(len, curves)) > LABEL_INSIDE:
            ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), ncol=1, frameon=False)
        else:
            ax.legend(loc="best")
        return fig

    return png_bytes(draw)


#: up to this many curves, with labels up to this many characters, the legend sits inside the axes ("best" place);
#: more or longer go below them
LEGEND_INSIDE = 6
LABEL_INSIDE = 48
#: a train loss whose largest / smallest value exceeds this is drawn on log y
LOG_RATIO = 3.0


def bench_plot(rows: list[dict[str, Any]]) -> bytes:
    """Throughput and peak memory vs token count, log-log, one line per (backbone, device)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status", "ok") == "ok":
            name = r.get("variant") or r.get("backbone", "?")
            groups.setdefault((str(name), str(r.get("device", ""))), []).append(r)
    devices = sorted({d for _, d in groups})
    # a variant measured at another batch (e.g. the bench's small-batch fused/reference pair) says so in its label
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r.get("batch_tokens")] = counts.get(r.get("batch_tokens"), 0) + 1
    usual = max(counts, key=counts.get) if counts else None

    def batch_note(rs: list[dict[str, Any]]) -> str:
        other = sorted({r.get("batch_tokens") for r in rs} - {usual, None})
        return f" ({', '.join(str(b) for b in other)} tokens/step)" if other else ""

    def thr(r: dict[str, Any]) -> float | None:
        if r.get("train_images_per_s") is not None:
            return float(r["train_images_per_s"])
        return None

    def draw():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.4, 3.8))
        use_ms = not any(thr(r) is not None for rs in groups.values() for r in rs)
        for color, ((bb, dev), rs) in zip(_colors(len(groups)), sorted(groups.items())):
            rs = sorted(rs, key=lambda r: float(r["tokens"]))
            label = (bb if len(devices) == 1 else f"{bb} · {dev}") + batch_note(rs)
            x = [float(r["tokens"]) for r in rs]
            y = [float(r["step_ms"]) if use_ms else thr(r) for r in rs]
            pts = [(a, b) for a, b in zip(x, y) if b is not None and b > 0]
            if pts:
                a1.plot(*zip(*pts), marker="o", ms=3.5, color=color, label=label)
            mem = [(a, float(r["peak_memory_gb"])) for a, r in zip(x, rs) if r.get("peak_memory_gb")]
            if mem:
                a2.plot(*zip(*mem), marker="s", ms=3.5, color=color, label=label)
        a1.set_ylabel("train step time (ms) ↓" if use_ms else "train throughput (img/s) ↑")
        a1.set_title("Throughput vs sequence length")
        a2.set_ylabel("peak memory (GB) ↓")
        a2.set_title("Peak memory vs sequence length")
        for ax in (a1, a2):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("tokens per sample (log)")
        handles, labels = a1.get_legend_handles_labels()
        if not handles:
            handles, labels = a2.get_legend_handles_labels()
        if handles:  # one legend beside both panels: inside, it hid the lines it names
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.55), fontsize=8)
        fig.suptitle("Device: " + ", ".join(devices), fontsize=8, y=0.02, va="bottom")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        return fig

    return png_bytes(draw)


def pareto_plot(table: Table, quality: MetricInfo, cost: MetricInfo) -> tuple[bytes, list[str], list[str]]:
    """Variant means (error bars: std over seeds) of quality vs cost, each named. Filled: no other variant dominates
    it beyond the seed noise (stats.pareto_front); dashed: the front of the means, which is a monotone line (the
    noise-aware set need not be, and a line through it would read as a trade-off curve it is not). Returns the PNG
    and the labels of both fronts."""
    rows = [r for r in table.rows if math.isfinite(r.cells[quality.name].mean) and math.isfinite(r.cells[cost.name].mean)]
    pts = [(r.cells[cost.name].mean, r.cells[quality.name].mean) for r in rows]
    cells = [(r.cells[cost.name], r.cells[quality.name]) for r in rows]
    front = pareto_front(cells, x_higher=cost.higher_is_better, y_higher=quality.higher_is_better)
    line = means_front(cells, x_higher=cost.higher_is_better, y_higher=quality.higher_is_better)

    def draw():
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, r in enumerate(rows):
            cx, cy = r.cells[cost.name], r.cells[quality.name]
            on = i in front
            ax.errorbar(cx.mean, cy.mean, xerr=_err(cx.std, cx.mean, cost.bounds),
                        yerr=_err(cy.std, cy.mean, quality.bounds), fmt="o",
                        ms=6 if on else 4, color="#c0392b" if on else "#7f8c8d", mfc="#c0392b" if on else "white",
                        capsize=2, lw=0.8, zorder=3 if on else 2)
        spread_labels(ax, pts, [r.label for r in rows])
        handles = [Line2D([], [], ls="", marker="o", ms=6, color="#c0392b", label="not dominated beyond the noise")]
        fr = sorted(pts[i] for i in line)
        if len(fr) > 1:
            handles += ax.plot(*zip(*fr), color="#c0392b", lw=1, ls="--", zorder=1, label="front of the means")
        ax.set_xlabel(f"{cost.title} ({cost.unit}) {cost.arrow}")
        # below the axes, where it covers no point or label
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.13), ncol=2, frameon=False)
        ax.set_ylabel(f"{quality.title} {quality.arrow}")
        ax.set_title(f"Quality vs cost: {quality.title} against {lower_title(cost.title)}")
        return fig

    return png_bytes(draw), [rows[i].label for i in front], [rows[i].label for i in line]


def spread_labels(ax: Any, points: list[tuple[float, float]], labels: list[str], *, fontsize: float = 7) -> list:
    """Name each point with a label beside it; labels of points near one another in x (same NFE, say) are pushed
    apart vertically so none overlaps, with a thin leader line from a moved label to its point. Returns the texts."""
    ax.autoscale_view()
    fig = ax.figure
    px_per_pt = fig.dpi / 72.0
    gap = (fontsize + 2.5) * px_per_pt                           # one label's height in pixels, with a little air
    xy = ax.transData.transform(points) if points else []
    order = sorted(range(len(points)), key=lambda i: (xy[i][0], xy[i][1]))
    clusters: list[list[int]] = []                               # points within ~100 pt of each other in x
    for i in order:
        if clusters and xy[i][0] - xy[clusters[-1][0]][0] < 100 * px_per_pt:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    texts = []
    for cluster in clusters:
        cluster.sort(key=lambda i: xy[i][1])
        want = [xy[i][1] + 5 * px_per_pt for i in cluster]       # each label centred just above its point
        placed = list(want)
        for k in range(1, len(placed)):                          # push up until they clear the one below
            placed[k] = max(placed[k], placed[k - 1] + gap)
        shift = (sum(want) - sum(placed)) / len(placed)          # then centre the column on where they wanted to be
        placed = [y + shift for y in placed]
        for k in range(len(placed) - 2, -1, -1):                 # and keep the order after centring
            placed[k] = min(placed[k], placed[k + 1] - gap)
        for i, y in zip(cluster, placed):
            dy = (y - xy[i][1]) / px_per_pt
            moved = abs(dy - 5) > 2
            texts.append(ax.annotate(labels[i], points[i], xytext=(10 if moved else 4, dy), textcoords="offset points",
                                     fontsize=fontsize, va="center",
                                     arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#95a5a6"} if moved else None))
    return texts


def _err(std: float, mean: float | None = None, bounds: tuple[float | None, float | None] = (None, None)):
    """An error bar of one std, or None; with the metric's bounds, its arms clipped where the metric ends (an
    accuracy's bar stops at 1), as matplotlib's [[below], [above]]."""
    if not math.isfinite(std):
        return None
    lo, hi = bounds
    if mean is None or (lo is None and hi is None):
        return std
    below = std if lo is None else max(0.0, min(std, mean - lo))
    above = std if hi is None else max(0.0, min(std, hi - mean))
    return [[below], [above]]


def grid_tiles(path: Path, nrow: int, count: int) -> list[Any]:
    """The first `count` images of a grid saved by harness.sampling.save_grid (torchvision's layout: `nrow`
    columns of equal tiles, one pixel of padding around each), as RGB arrays in reading order."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))
    h = w = (grid.shape[1] - 1) // nrow - 1
    rows = (grid.shape[0] - 1) // (h + 1)
    if w < 1 or grid.shape[1] != nrow * (w + 1) + 1 or grid.shape[0] != rows * (h + 1) + 1:
        raise ValueError(f"{path}: a {grid.shape[1]}x{grid.shape[0]} image is not a grid of {nrow} square tiles a row")
    return [grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w]
            for r in range(rows) for c in range(nrow)][:count]


def captioned_grid(path: Path, captions: list[str], nrow: int, *, show: int = 16, columns: int = 4) -> bytes:
    """The first `show` samples of a grid, each under the prompt it was drawn from, `columns` a row."""
    import textwrap

    tiles = grid_tiles(path, nrow, min(show, len(captions)))

    def draw():
        rows = math.ceil(len(tiles) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.35 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(tiles):
                ax.imshow(tiles[i], interpolation="nearest")
                ax.set_title(textwrap.fill(captions[i], 26), fontsize=7.5, pad=3)
        fig.tight_layout(pad=0.3)
        return fig

    return png_bytes(draw)


def seed_panel(rows: list[tuple[str, list[tuple[int, Path]]]]) -> bytes:
    """One figure of whole sample grids: a row per variant under its label, a column per seed (each cell titled
    with its seed), each cell the grid image at `Path` (a GIF's first frame) drawn at its own pixels' size."""
    from PIL import Image

    def first_frame(path: Path):
        with Image.open(path) as im:
            return im.convert("RGB")

    cells = [[(seed, first_frame(p)) for seed, p in seeds] for _, seeds in rows]
    width = max(im.width for row in cells for _, im in row) / DPI        # inches: saved at DPI, a pixel a pixel
    height = max(im.height for row in cells for _, im in row) / DPI
    columns = max(len(row) for row in cells)

    def draw():
        fig = plt.figure(figsize=(columns * (width + 0.12), len(cells) * (height + 0.5)), layout="constrained")
        for sub, (label, _), row in zip(fig.subfigures(len(cells), 1, squeeze=False)[:, 0], rows, cells):
            sub.suptitle(label, x=0.0, ha="left", fontsize=8.5)
            for c, ax in enumerate(sub.subplots(1, columns, squeeze=False)[0]):
                ax.axis("off")
                if c < len(row):
                    ax.imshow(row[c][1], interpolation="nearest")
                    ax.set_title(f"seed {row[c][0]}", fontsize=8, pad=2)
        return fig

    return png_bytes(draw)


def frame_strip(path: Path, max_frames: int = 8) -> bytes:
    """An animated GIF of sample videos -> one PNG with its first frames side by side."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        frames = [f.convert("RGB") for _, f in zip(range(max_frames), ImageSequence.Iterator(im))]
    w, h = frames[0].size
    strip = Image.new("RGB", (w * len(frames) + 2 * (len(frames) - 1), h), "white")
    for i, f in enumerate(frames):
        strip.paste(f, (i * (w + 2), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG", optimize=False)
    return compact_png(buf.getvalue())


#: line styles of a model's arms (its equal-steps / GPU-time / FLOPs rows) in the quality-vs-compute panels
ARM_STYLES = ("-", "--", ":", "-.")


def arm_styles(variants: list[str], models: dict[str, str]) -> dict[str, tuple[Any, str]]:
    """variant -> (colour, line style): one colour per model (variant -> model; a variant alone is its own), its
    arms told apart by ARM_STYLES in their order."""
    order = list(dict.fromkeys(models.get(v, v) for v in variants))
    colour = dict(zip(order, _colors(len(order))))
    seen: dict[str, int] = {}
    out = {}
    for v in variants:
        m = models.get(v, v)
        out[v] = (colour[m], ARM_STYLES[seen.get(m, 0) % len(ARM_STYLES)])
        seen[m] = seen.get(m, 0) + 1
    return out


def compute_plot(panels: dict[str, dict[str, tuple[list, list, list, list]]], info: MetricInfo,
                 models: dict[str, str] | None = None) -> bytes:
    """Quality vs compute, one panel per axis title: variant -> (x, mean, min, max), log x. `models` (variant ->
    model) gives a model's variants (its arms) one colour and a line style each."""
    variants = list(dict.fromkeys(v for curves in panels.values() for v in curves))
    styles = arm_styles(variants, models or {})

    def draw():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (title, curves) in zip(axes[0], panels.items()):
            for variant, (x, mean, lo, hi) in curves.items():
                if not x:
                    continue
                c, ls = styles[variant]
                ax.plot(x, mean, color=c, lw=1.4, ls=ls, label=variant)
                ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
            ax.set_xscale("log")
            # ticks at 1, 2 and 5 of every decade: a run's range often holds no power of ten to label
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(title)
            ax.set_ylabel(f"{info.title} {info.arrow}")
        legend = {}                           # label -> handle, over every panel (a curve may miss one)
        for ax in axes[0]:
            for h, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, h)
        fig.suptitle(f"{info.title} vs training compute (mean over seeds; band: min–max)")
        fig.tight_layout()
        # below the panels, where it covers no curve (labels with budget keys are long for a panel's legend)
        fig.legend(list(legend.values()), list(legend), loc="upper left", bbox_to_anchor=(0.01, 0.0), ncol=1,
                   frameon=False)
        return fig

    return png_bytes(draw)
