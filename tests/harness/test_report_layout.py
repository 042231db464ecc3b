"""The report's pictures and layout: a real-data grid beside the samples, zoomable grids, scan pictures on the
trials' token grid, tables that fit a 1,400 px window."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from report_study import make_study

from harness.report import build_report

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--window-size=1400,1000",
         "--virtual-time-budget=10000", "--dump-dom"]


def _png(seed: int) -> bytes:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (34, 34), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def scans_report(tmp_path_factory) -> Path:
    """The toy scan study, one of whose trials also wrote real.png, and its report."""
    folder = make_study(tmp_path_factory.mktemp("layout"))
    next(d for d in sorted((folder / "trials").iterdir()) if d.is_dir()).joinpath("real.png").write_bytes(_png(7))
    return build_report(folder, folder.parent.parent / "report")


def test_the_real_data_grid_leads_the_sample_grids(scans_report):
    figures = json.loads((scans_report / "summary.json").read_text())["figures"]
    samples = [f for f in figures if f.startswith(("real-", "samples-"))]
    assert samples[0] == "real-toy_scans.png" and len(samples) > 1
    assert (scans_report / samples[0]).read_bytes() == _png(7)


def test_the_token_grid_is_the_resolution_over_the_patch_size():
    from harness.report.data import _token_grid
    from harness.study import expand_trials, parse_study
    doc = {"name": "g", "base": {"dataset": {"name": "digits", "resolution": 32},
                                 "backbone": {"name": "zigma", "patch_size": 2}}}
    assert _token_grid(expand_trials(parse_study(doc, source="g.yaml"))[0]) == (1, 16, 16)


def _probe(page: Path, script: str, tmp: Path) -> dict:
    """Load page with `script` run after load; returns the JSON it writes into <pre id="__probe">."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>", 1))
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.DOTALL)
    assert found, res.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


_WRITE = ("var out = document.createElement('pre'); out.id = '__probe'; out.textContent = JSON.stringify(r); "
          "document.body.appendChild(out);")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_clicking_a_sample_grid_shows_it_at_full_window_size_and_escape_closes_it(scans_report, tmp_path):
    script = """window.addEventListener('load', function () {
      var thumb = document.querySelector('#samples ~ .grid img.zoomable'), zoom = document.getElementById('zoom');
      var r = {hiddenBefore: zoom.hidden, thumbWidth: thumb.getBoundingClientRect().width};
      thumb.click();
      var big = zoom.querySelector('img');
      r.shown = !zoom.hidden; r.same = big.src === thumb.src;
      r.bigWidth = big.getBoundingClientRect().width; r.window = window.innerWidth;
      document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));
      r.hiddenAfter = zoom.hidden;
      """ + _WRITE + "});"
    r = _probe(scans_report / "index.html", script, tmp_path)
    assert r["hiddenBefore"] and r["shown"] and r["same"] and r["hiddenAfter"], r
    assert r["bigWidth"] > 0.9 * r["window"] > 3 * r["thumbWidth"], r


REPO = Path(__file__).resolve().parents[2]


def _with_template_css(page: Path, tmp: Path) -> Path:
    """The page with its <style> block replaced by the current template's (the CSS is all that differs)."""
    style = re.compile(r"<style>.*?</style>", re.DOTALL)
    css = style.search((REPO / "harness" / "report" / "templates" / "index.html.j2").read_text()).group(0)
    out = tmp / "restyled.html"
    out.write_text(style.sub(lambda _: css, page.read_text(), count=1))
    return out


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
@pytest.mark.parametrize("published", ["backbone_comparison", "scan_ablation"])
def test_every_results_table_of_a_published_report_fits_a_1400_px_window(published, tmp_path):
    page = _with_template_css(REPO / "reports" / published / "index.html", tmp_path)
    script = """window.addEventListener('load', function () {
      var r = {window: window.innerWidth, tables: []};
      document.querySelectorAll('#results ~ .tablewrap').forEach(function (w) {
        r.tables.push([w.scrollWidth, w.clientWidth]);
      });
      """ + _WRITE + "});"
    r = _probe(page, script, tmp_path)
    assert r["window"] == 1400 and r["tables"], r
    assert all(scroll <= client for scroll, client in r["tables"]), r


def _sampler_table(nfe: dict[str, list[float]]):
    from harness.report.tables import Cell, MetricInfo, Row, Table
    fd = MetricInfo("fd-effnet", "FD", "", False, "quality")
    n = MetricInfo("nfe", "NFE", "evals", False, "cost")

    def cell(vals):
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return Cell(mean, std, len(vals))

    rows = [Row({"sampler": {"name": name, **({"steps": 25} if name == "heun" else {})}}, name, len(v), 0,
                cells={"fd-effnet": cell([40.0, 42.0]), "nfe": cell(v)}) for name, v in nfe.items()]
    rows[0].baseline = True
    return Table("t", ["sampler"], [fd, n], rows, "euler", {"fd-effnet": 1, "nfe": 1})


def test_nfe_stands_beside_quality_when_the_samplers_differ_in_it():
    from harness.report.render import _display
    disp = _display(_sampler_table({"euler": [50.0, 50.0], "heun": [50.0, 50.0], "dopri5": [86.0, 98.0]}),
                    "quality")
    assert [h for h, _ in disp["head"]][:3] == ["sampler", "n", "NFE (evals)"]
    assert [r["cells"][0][0] for r in disp["rows"]] == ["euler (baseline)", "heun steps=25", "dopri5"]
    assert [r["cells"][2][0] for r in disp["rows"]] == ["50.0", "50.0", "92.0 ± 8.5"]   # std of 86, 98: 8.49
    assert "adaptive" in disp["beside"]
    same = _display(_sampler_table({"euler": [50.0, 50.0], "heun": [50.0, 50.0]}), "quality")
    assert "NFE (evals)" not in [h for h, _ in same["head"]] and not same["beside"]


def test_without_latency_figures_the_pareto_plot_puts_quality_against_nfe():
    from harness.report.figures import pareto
    fig, info = pareto([_sampler_table({"euler": [50.0, 50.0], "heun": [50.0, 50.0], "dopri5": [86.0, 98.0]})])
    assert fig is not None and info["cost"] == "nfe" and fig.title.endswith("against NFE")


def test_pareto_labels_of_points_at_one_cost_do_not_overlap():
    """Twelve variants at the same NFE (an interpolant study): the oracle is matplotlib's own rendered text extents."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.plots import spread_labels

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    points = [(50.0, y) for y in (461, 473, 505, 525, 579, 608, 631, 632, 696, 727, 728, 728)] + [(174.0, 479)]
    ax.plot(*zip(*points), "o")
    texts = spread_labels(ax, points, [f"variant number {i} with a long label" for i in range(len(points))])
    fig.canvas.draw()
    from matplotlib.text import Text
    boxes = [Text.get_window_extent(t) for t in texts]        # the text alone (an Annotation's includes its leader)
    assert len(boxes) == len(points)
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (texts[a].get_text(), texts[b].get_text())
    plt.close(fig)


@pytest.mark.parametrize("n", [3, 12])
def test_a_long_training_curve_legend_sits_below_the_axes_and_a_short_one_inside(monkeypatch, n):
    import matplotlib
    matplotlib.use("Agg")

    from harness.report import plots
    from harness.report.tables import MetricInfo

    figs = []
    monkeypatch.setattr(plots, "png_bytes", lambda draw: figs.append(draw()) or b"")
    curves = {f"variant {i} with a fairly long name": [[(s, 1.0 / (s + i)) for s in (10, 20, 30)]] for i in range(n)}
    plots.history_plot(curves, MetricInfo("train_loss", "Train loss", "", False, "quality"), {})
    fig = figs[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
    if n > plots.LEGEND_INSIDE:
        assert legend.y1 < frame.y0, "a long legend must not cover the plot"
    else:
        assert frame.contains(legend.x0, legend.y0) and frame.contains(legend.x1, legend.y1)


def _encode(array, mode):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _decoded(png):
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return im.mode, np.asarray(im.convert("RGBA"))


def test_compact_png_keeps_every_pixel_and_drops_only_what_carries_nothing():
    import numpy as np

    from harness.report.plots import compact_png

    rng = np.random.default_rng(0)
    few = np.full((40, 60, 4), 255, np.uint8)                       # opaque, 200 grey levels: a palette
    few[..., :3] = rng.integers(0, 200, (40, 60, 1), dtype=np.uint8)
    many = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)        # ~2,400 colours: stays RGB
    many[..., 3] = 255
    clear = few.copy()
    clear[0, 0, 3] = 0                                              # one transparent pixel: the alpha stays
    for array, mode in ((few, "P"), (many, "RGB"), (clear, "RGBA")):
        got_mode, got = _decoded(compact_png(_encode(array, "RGBA")))
        assert got_mode == mode
        assert np.array_equal(got, array)
    assert len(compact_png(_encode(few, "RGBA"))) < len(_encode(few, "RGBA"))
