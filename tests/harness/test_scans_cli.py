"""`harness scans show|table`, the built-in scan plugin, and the example third-party scan plugin."""

import re
import tomllib
from pathlib import Path

import pytest
import torch

from plugins.registry import load_registries
from tests.harness.cli_support import run_cli as _run
from zigma.scans import Grid

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scan_plugin"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def _rows(text: str) -> dict[str, list[str]]:
    """Table body rows of `harness scans table`, by scan name."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] and cells[0] != "scan":
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def example_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", "block_raster_scan")
    yield
    load_registries.cache_clear()


def test_every_registered_scan_builds_valid_orders_from_its_seed():
    for item in load_registries().scans:
        grid = Grid(5, 6, 3) if item.entry.modality == "video" else Grid(5, 6)
        scans = item.entry.build(seed=7).layer_scans(grid, 6)
        assert len(scans) == 6, item.entry.name
        for scan in scans:
            for order in scan.orders:
                assert torch.equal(order.sort().values, torch.arange(grid.num_tokens)), item.entry.name


def test_the_registry_holds_every_scheme_of_the_architecture_contract():
    names = set(load_registries().scans.names())
    expected = {"sweep-1", "sweep-2", "zigzag-3d", "video-sst", "video-st", "video-ss-tt"}
    for family in ("zigzag", "hilbert", "hilbert-as-released", "random", "jpeg", "spiral"):
        expected |= {f"{family}-{k}" for k in (1, 2, 4, 8)}
    expected |= {f"parallel-{k}" for k in (2, 4, 8)}
    assert expected <= names


def test_table_reports_measured_continuity_and_orders_per_scheme(capsys):
    code, out, _ = _run(capsys, "scans", "table", "--grid", "16x16", "--depth", "8")
    assert code == 0
    rows = _rows(out)
    assert rows["zigzag-8"] == ["1", "8", "1.000", "1"]
    assert rows["sweep-2"] == ["2", "2", f"{240 / 255:.3f}", "1"]
    assert rows["parallel-4"][:2] == ["4", "4"]
    assert rows["hilbert-as-released-1"][2] == f"{120 / 255:.3f}"
    assert "video-sst" not in rows and "video-sst" in out      # listed as left out without --frames


def test_table_with_frames_includes_video_scans_and_their_segments(capsys):
    code, out, _ = _run(capsys, "scans", "table", "--grid", "4x6", "--frames", "3", "--depth", "6")
    assert code == 0
    rows = _rows(out)
    assert rows["video-sst"] == ["1", "6", "1.000", "3/24"]     # 4 spatial + 2 temporal orders
    assert rows["zigzag-3d"][2:] == ["1.000", "1"]


def test_show_writes_a_png_with_one_panel_per_distinct_order(capsys, tmp_path):
    out_png = tmp_path / "pics" / "zz.png"
    code, out, _ = _run(capsys, "scans", "show", "zigzag-4", "--grid", "5x7", "--depth", "6",
                        "--out", str(out_png))
    assert code == 0 and "4 panels" in out
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_show_draws_video_scans(capsys, tmp_path):
    out_png = tmp_path / "sst.png"
    code, out, _ = _run(capsys, "scans", "show", "video-sst", "--grid", "3x4", "--frames", "2",
                        "--depth", "3", "--out", str(out_png))
    assert code == 0 and "3 panels" in out
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_show_of_an_unknown_scan_suggests_the_near_match(capsys, tmp_path):
    code, _, err = _run(capsys, "scans", "show", "zigzg-8", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "Did you mean 'zigzag-8'" in err


def test_show_of_a_video_scan_without_frames_is_one_clear_error(capsys, tmp_path):
    code, _, err = _run(capsys, "scans", "show", "video-sst", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "give --frames" in err


def test_a_malformed_grid_is_a_usage_error(capsys):
    code, _, err = _run(capsys, "scans", "table", "--grid", "16by16")
    assert code != 0 and "HxW" in err


def test_example_plugin_scheme_works_through_the_registry(example_plugin):
    registry = load_registries().scans
    assert registry.plugin_of("block-raster-4") == "block_raster_scan"
    grid = Grid(6, 10, 2)
    order = registry.get("block-raster-4").build(seed=0).layer_scans(grid, 2)[0].orders[0]
    assert torch.equal(order.sort().values, torch.arange(grid.num_tokens))
    assert order[:6].tolist() == [0, 1, 2, 3, 10, 11]        # first 4x4 window, row by row
    assert order[16:20].tolist() == [4, 5, 6, 7]             # then the next window to the right


def test_example_plugin_shows_up_in_the_table(example_plugin, capsys):
    code, out, _ = _run(capsys, "scans", "table", "--grid", "8x8", "--depth", "2")
    assert code == 0
    assert _rows(out)["block-raster-4"][0] == "block_raster_scan"


def test_example_plugin_declares_its_module_in_the_entry_point_group():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    module = project["entry-points"]["zigma_harness"]["block_raster"]
    assert (EXAMPLE / f"{module}.py").is_file()


def test_the_plugin_guide_shows_the_example_module_verbatim():
    guide = (ROOT / "docs" / "adding-a-scan-plugin.md").read_text()
    block = re.search(r"```python\n(.*?)```", guide, re.DOTALL)[1]
    assert block == (EXAMPLE / "block_raster_scan.py").read_text()


def test_scan_figure_gives_reports_one_axis_per_distinct_order():
    from harness.report.scans import scan_figure

    fig = scan_figure("spiral-2", Grid(5, 5), 4, 0)
    assert len(fig.axes) == 2


@pytest.mark.parametrize(("name", "count"), [("sweep-1", "1 distinct order,"), ("spiral-2", "2 distinct orders,")])
def test_scan_figure_title_counts_its_orders_in_words(name, count):
    from harness.report.scans import scan_figure

    assert count in scan_figure(name, Grid(5, 5), 4, 0)._suptitle.get_text()


@pytest.fixture
def video_scan_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", "video_scan_plugin")
    load_registries.cache_clear()
    yield
    load_registries.cache_clear()


def test_a_scheme_that_says_video_on_its_class_is_a_video_scan_in_the_registry(video_scan_plugin):
    assert load_registries().scans.get("frame-flip").modality == "video"
    assert load_registries().scans.get("no-square").modality == "any"


def test_the_table_leaves_out_a_video_scheme_on_an_image_grid_and_names_one_that_raises(video_scan_plugin, capsys):
    code, out, err = _run(capsys, "scans", "table", "--grid", "8x8", "--depth", "2")
    assert code == 0 and "Traceback" not in out + err
    rows = _rows(out)
    assert "frame-flip" not in rows and "no-square" not in rows and "zigzag-8" in rows
    assert re.search(r"video scans left out .*frame-flip", out)
    assert "no-square (video_scan_plugin): ValueError: square grids are not supported" in out


def test_a_scan_entry_with_an_unknown_modality_is_refused_at_registration():
    from plugins.specs import ScanEntry

    with pytest.raises(ValueError, match="modality is 'image', 'video' or 'any', got 'movie'"):
        ScanEntry(name="x", description="x", build=lambda seed: None, modality="movie")


def test_scan_figures_put_wide_video_panels_in_one_column_and_keep_the_title_clear_of_the_panels():
    from harness.report.scans import MAX_WIDTH_IN, scan_figure
    from zigma.scans import Grid

    for name, grid, columns in (("zigzag-8", Grid(16, 16, 1), 4), ("video-sst", Grid(8, 8, 8), 1)):
        fig = scan_figure(name, grid, 8)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        lefts = {round(ax.get_position().x0, 3) for ax in fig.axes}
        assert len(lefts) == columns, name
        assert fig.get_figwidth() <= MAX_WIDTH_IN + 1e-9
        title = fig._suptitle.get_window_extent(renderer)
        assert all(title.y0 >= ax.get_tightbbox(renderer).y1 - 0.5 for ax in fig.axes), name   # no overlap
