"""Sample grids in reports: the tiles cut back out of a saved grid, and text prompts shown under their samples."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.report import plots
from harness.report.data import StudyData
from harness.report.figures import sample_figures
from harness.sampling import save_grid


def _tiles(n: int, size: int = 6) -> torch.Tensor:
    """n uint8 RGB images, image i filled with the colour (i, 2i, 3i) (all distinct)."""
    colours = torch.tensor([[i, 2 * i, 3 * i] for i in range(n)], dtype=torch.uint8)
    return colours[:, :, None, None].expand(n, 3, size, size).contiguous()


def test_the_tiles_of_a_saved_grid_come_back_in_reading_order(tmp_path):
    fake = _tiles(9)
    save_grid(fake, tmp_path / "samples.png", 9)
    tiles = plots.grid_tiles(tmp_path / "samples.png", nrow=3, count=9)
    assert len(tiles) == 9
    for i, tile in enumerate(tiles):                        # each cut tile is exactly image i, no padding pixel
        assert tile.shape == (6, 6, 3) and (tile == [i, 2 * i, 3 * i]).all(), i


def test_a_grid_that_is_not_nrow_square_tiles_wide_is_refused(tmp_path):
    save_grid(_tiles(9), tmp_path / "samples.png", 9)
    with pytest.raises(ValueError, match="not a grid of 4"):
        plots.grid_tiles(tmp_path / "samples.png", nrow=4, count=9)


def test_a_text_grid_writes_its_prompts_beside_it_and_a_class_grid_does_not(tmp_path):
    captions = [f"caption {i}" for i in range(12)]
    save_grid(_tiles(12), tmp_path / "text.png", 9, captions=captions)
    assert json.loads((tmp_path / "text.json").read_text()) == {"captions": captions[:9], "nrow": 3, "kind": "prompt"}
    save_grid(_tiles(12), tmp_path / "class.png", 9)
    assert not (tmp_path / "class.json").exists()


def _study(tmp_path, captions_doc) -> StudyData:
    save_grid(_tiles(4), tmp_path / "samples.png", 4)
    (tmp_path / "samples.json").write_text(captions_doc if isinstance(captions_doc, str) else json.dumps(captions_doc))
    s = StudyData(name="t", folder=None, trials=pd.DataFrame(
        [{"variant": "zigma", "status": "completed", "trial_key": "k", "seed": 0}]))
    s.samples["k"], s.sample_captions["k"] = tmp_path / "samples.png", tmp_path / "samples.json"
    return s


def test_a_report_shows_a_text_trials_samples_under_their_prompts(tmp_path):
    s = _study(tmp_path, {"captions": ["a red circle top left", "b", "c", "d"], "nrow": 2})
    (fig,) = sample_figures([s], multi=False)
    assert "each under its prompt," in fig.caption and "recomputed" not in fig.caption
    assert fig.png != (tmp_path / "samples.png").read_bytes()     # a drawn figure, not the bare grid


@pytest.mark.parametrize("doc", ["{not json", {"captions": "abc", "nrow": 2}, {"captions": ["a"], "nrow": 0},
                                 {"captions": ["a"], "nrow": True}, {"nrow": 2},
                                 {"captions": ["a", "b", "c", "d"], "nrow": 3}])   # last: not the grid's layout
def test_a_malformed_prompts_file_is_ignored_and_the_bare_grid_shown(tmp_path, doc):
    s = _study(tmp_path, doc)
    (fig,) = sample_figures([s], multi=False)
    assert fig.png == (tmp_path / "samples.png").read_bytes() and "prompt" not in fig.caption


def test_a_text_trial_saves_the_prompts_of_its_grid_and_they_are_captions_of_its_data(tmp_path, registries):
    from harness.study import expand_trials, load_study
    from harness.trial import run_trial
    from zigma.data import caption_to_attributes

    spec = next(s for s in expand_trials(load_study("studies/text_conditioning.yaml", preset="smoke"))
                if s.config.backbone.name == "dit")                          # the cheaper of the two
    run_trial(spec, registries, trial_dir=tmp_path / "t", device=torch.device("cpu"), cache_dir=tmp_path / "c")
    doc = json.loads((tmp_path / "t" / "samples.json").read_text())
    assert doc["nrow"] == 4 and len(doc["captions"]) == spec.config.eval.grid_samples == 16
    for text in doc["captions"]:
        caption_to_attributes(text)                                           # raises on anything not a caption


def test_prompts_recomputed_after_the_run_are_said_to_be(tmp_path):
    s = _study(tmp_path, {"captions": ["a", "b", "c", "d"], "nrow": 2, "note": "recomputed at ..."})
    (fig,) = sample_figures([s], multi=False)
    assert "recomputed after the run: trials/k/samples.json says how" in fig.caption


def test_a_class_conditional_trial_saves_the_class_name_of_each_grid_image(tmp_path, registries):
    """Digits conditioned on their class: sample i is drawn for label i mod 10 (harness.model.Conditioning), so the
    grid's names read '0', '1', ..., '9', '0', ... in reading order."""
    import yaml

    from harness.study import expand_trials, parse_study
    from harness.trial import run_trial

    raw = yaml.safe_load(Path("studies/scan_ablation.yaml").read_text())
    raw["base"]["conditioning"] = {"kind": "class"}
    spec = expand_trials(parse_study(raw, source="test", preset="smoke"))[0]
    run_trial(spec, registries, trial_dir=tmp_path / "t", device=torch.device("cpu"), cache_dir=tmp_path / "c")
    doc = json.loads((tmp_path / "t" / "samples.json").read_text())
    n = spec.config.eval.grid_samples
    assert doc == {"captions": [str(i % 10) for i in range(n)], "nrow": int(n ** 0.5), "kind": "class"}


def test_class_names_read_as_such_in_the_figure_caption(tmp_path):
    s = _study(tmp_path, {"captions": ["Bag", "Coat", "Shirt", "Dress"], "nrow": 2, "kind": "class"})
    (fig,) = sample_figures([s], multi=False)
    assert "each under the class it was drawn for," in fig.caption


def _solid_grid(path: Path, colour: tuple[int, int, int]) -> Path:
    save_grid(torch.tensor(colour, dtype=torch.uint8)[None, :, None, None].expand(4, 3, 8, 8).contiguous(), path, 4)
    return path


def test_every_seeds_grid_is_drawn_in_its_variants_row_and_its_seeds_column(tmp_path):
    """Each (variant, seed) grid a solid colour of its own: in the drawn figure a variant's colours lie on one row,
    below the variant before it, and seed 0 left of seed 1 though the trials came in the other order; a failed
    trial's grid is not drawn."""
    import io

    import numpy as np
    from PIL import Image

    colours = {("a", 0): (250, 10, 10), ("a", 1): (10, 250, 10), ("b", 0): (10, 10, 250), ("b", 1): (250, 250, 10)}
    rows = [{"variant": v, "status": "completed", "trial_key": f"{v}{seed}", "seed": seed}
            for v in ("a", "b") for seed in (1, 0)]
    rows.append({"variant": "b", "status": "failed", "trial_key": "b2", "seed": 2})
    s = StudyData(name="t", folder=None, trials=pd.DataFrame(rows))
    for (v, seed), colour in colours.items():
        s.samples[f"{v}{seed}"] = _solid_grid(tmp_path / f"{v}{seed}.png", colour)
    s.samples["b2"] = _solid_grid(tmp_path / "b2.png", (10, 250, 250))
    (fig,) = [f for f in sample_figures([s], multi=False) if f.file == "samples-by-seed.png"]
    img = np.asarray(Image.open(io.BytesIO(fig.png)).convert("RGB")).astype(int)
    where = {}
    for key, colour in colours.items():
        ys, xs = np.nonzero((np.abs(img - colour) <= 3).all(axis=2))
        assert len(ys) >= 100, key                                   # drawn at its own size: 17x17 pixels or more
        where[key] = (ys.mean(), xs.mean())
    assert not (np.abs(img - (10, 250, 250)) <= 3).all(axis=2).any()          # the failed trial is not drawn
    for v in ("a", "b"):
        assert abs(where[v, 0][0] - where[v, 1][0]) < 2 and where[v, 0][1] < where[v, 1][1]
    assert max(where["a", s][0] for s in (0, 1)) < min(where["b", s][0] for s in (0, 1))


def test_a_study_with_one_seed_per_variant_gets_no_seed_figure(tmp_path):
    s = StudyData(name="t", folder=None, trials=pd.DataFrame(
        [{"variant": v, "status": "completed", "trial_key": v, "seed": 0} for v in ("a", "b")]))
    for v in ("a", "b"):
        s.samples[v] = _solid_grid(tmp_path / f"{v}.png", (200, 0, 0))
    assert [f.file for f in sample_figures([s], multi=False)] == ["samples-a.png", "samples-b.png"]
