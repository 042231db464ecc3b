"""Scan orders: permutations, inverses, continuity, and the paper's paths checked against references."""

import pytest
import torch

import zigma.scans as zs
from zigma.scans import Grid
from zigma.scans.measure import neighbour_steps

torch.set_num_threads(1)

K = (1, 2, 4, 8)
IMAGE_SCHEMES = {
    "sweep-1": lambda: zs.Sweep(1, name="sweep-1"),
    "sweep-2": lambda: zs.Sweep(2, name="sweep-2"),
    **{f"zigzag-{k}": (lambda k=k: zs.LayerCycle(zs.zigzag_paths, k, name=f"zigzag-{k}")) for k in K},
    **{f"hilbert-{k}": (lambda k=k: zs.LayerCycle(zs.hilbert_paths, k, name=f"hilbert-{k}")) for k in K},
    **{f"hilbert-as-released-{k}": (lambda k=k: zs.LayerCycle(zs.hilbert_as_released_paths, k, name="h"))
       for k in K},
    **{f"jpeg-{k}": (lambda k=k: zs.LayerCycle(zs.jpeg_paths, k, name=f"jpeg-{k}")) for k in K},
    **{f"spiral-{k}": (lambda k=k: zs.LayerCycle(zs.spiral_paths, k, name=f"spiral-{k}")) for k in K},
    **{f"random-{k}": (lambda k=k: zs.RandomCycle(k, seed=3, name=f"random-{k}")) for k in K},
    **{f"parallel-{k}": (lambda k=k: zs.Parallel(zs.zigzag_paths, k, name=f"parallel-{k}")) for k in K[1:]},
}
VIDEO_SCHEMES = {
    **{f"video-{p}": (lambda p=p: zs.Factorized(p, name=f"video-{p}")) for p in ("sst", "st", "sstt", "t")},
    "zigzag-3d": lambda: zs.Snake3d(8, name="zigzag-3d"),
}
IMAGE_GRIDS = [Grid(4, 4), Grid(5, 7), Grid(6, 10), Grid(1, 9), Grid(9, 1), Grid(1, 1), Grid(16, 16)]
VIDEO_GRIDS = [Grid(4, 6, 3), Grid(5, 3, 2), Grid(1, 4, 4)]
CONTINUOUS = [n for n in IMAGE_SCHEMES if n.split("-")[0] in ("zigzag", "hilbert", "spiral", "parallel")
              and "released" not in n]
DEPTH = 10


def _cont(order, w):
    return neighbour_steps(order, Grid(order.numel() // w, w))


CASES = [(n, g) for n in IMAGE_SCHEMES for g in IMAGE_GRIDS + VIDEO_GRIDS] + \
    [(n, g) for n in VIDEO_SCHEMES for g in VIDEO_GRIDS]


@pytest.mark.parametrize(("name", "grid"), CASES, ids=[f"{n}-{g.t}x{g.h}x{g.w}" for n, g in CASES])
def test_every_layer_order_is_an_int64_permutation_whose_inverse_round_trips(name, grid):
    scheme = {**IMAGE_SCHEMES, **VIDEO_SCHEMES}[name]()
    scans = scheme.layer_scans(grid, DEPTH)
    assert len(scans) == DEPTH
    x = torch.arange(grid.num_tokens) * 10
    for scan in scans:
        assert scan.num_directions == scheme.directions
        for order, inv in zip(scan.orders, scan.inverses):
            assert order.dtype == torch.int64 and order.device.type == "cpu"
            assert torch.equal(order.sort().values, torch.arange(grid.num_tokens))
            assert torch.equal(x[order][inv], x)
            assert torch.equal(inv[order], torch.arange(grid.num_tokens))


@pytest.mark.parametrize("grid", IMAGE_GRIDS, ids=str)
@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_image_schemes_step_only_to_4_neighbours(name, grid):
    assert zs.continuity(IMAGE_SCHEMES[name]().layer_scans(grid, DEPTH), grid) == 1.0


@pytest.mark.parametrize("grid", VIDEO_GRIDS, ids=str)
@pytest.mark.parametrize("name", list(VIDEO_SCHEMES))
def test_video_schemes_step_only_to_neighbours_inside_each_segment(name, grid):
    assert zs.continuity(VIDEO_SCHEMES[name]().layer_scans(grid, DEPTH), grid) == 1.0


def test_every_generalized_hilbert_curve_up_to_14x14_steps_only_to_4_neighbours():
    for h in range(1, 15):
        for w in range(1, 15):
            for path in zs.hilbert_paths(h, w):
                assert torch.equal(path.sort().values, torch.arange(h * w)), (h, w)
                near, steps = _cont(path, w)
                assert near == steps, (h, w)


def test_hilbert_on_a_power_of_two_grid_visits_every_dyadic_block_contiguously():
    n = 16
    for path in zs.hilbert_paths(n, n):
        step_of = zs.inverse(path).reshape(n, n)
        for size in (2, 4, 8):
            for r in range(0, n, size):
                for c in range(0, n, size):
                    steps = step_of[r:r + size, c:c + size].flatten()
                    assert steps.max() - steps.min() == size * size - 1


def test_hilbert_has_eight_distinct_variants_when_both_sides_have_the_same_parity():
    for h, w in ((16, 16), (5, 7), (6, 8)):
        assert len({tuple(p.tolist()) for p in zs.hilbert_paths(h, w)}) == 8


def test_hilbert_as_released_has_120_of_255_neighbour_steps_at_16x16():
    # reference: the official code's order at N=16 has 120/255 neighbour steps (ZigMa's hilbert_path, measured);
    # the layer-by-layer official order is checked in test_hilbert_as_released.py
    for released in zs.hilbert_as_released_paths(16, 16):
        assert _cont(released, 16) == (120, 255)


def test_hilbert_as_released_is_less_continuous_than_hilbert_at_16x16():
    g = Grid(16, 16)
    true = zs.continuity(IMAGE_SCHEMES["hilbert-8"]().layer_scans(g, 8), g)
    released = zs.continuity(IMAGE_SCHEMES["hilbert-as-released-8"]().layer_scans(g, 8), g)
    assert released < 0.5 < true == 1.0


def test_zigzag_paths_at_4x4_match_the_official_code():
    # written out by hand from the definition (zigma-paper-and-code.md §1.2, CompVis/zigma utils_zigzag.py; the
    # first 8 steps are quoted in CompVis/zigma issue #24): corners TL, TR, BL, BR x (row-snake, column-snake)
    paths = [[0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11, 15, 14, 13, 12],
             [0, 4, 8, 12, 13, 9, 5, 1, 2, 6, 10, 14, 15, 11, 7, 3],
             [3, 2, 1, 0, 4, 5, 6, 7, 11, 10, 9, 8, 12, 13, 14, 15],
             [3, 7, 11, 15, 14, 10, 6, 2, 1, 5, 9, 13, 12, 8, 4, 0],
             [12, 13, 14, 15, 11, 10, 9, 8, 4, 5, 6, 7, 3, 2, 1, 0],
             [12, 8, 4, 0, 1, 5, 9, 13, 14, 10, 6, 2, 3, 7, 11, 15],
             [15, 14, 13, 12, 8, 9, 10, 11, 7, 6, 5, 4, 0, 1, 2, 3],
             [15, 11, 7, 3, 2, 6, 10, 14, 13, 9, 5, 1, 0, 4, 8, 12]]
    assert [p.tolist() for p in zs.zigzag_paths(4, 4)] == paths


def test_zigzag_8_on_an_even_grid_is_four_snakes_and_their_reversals():
    p = zs.zigzag_paths(16, 16)
    for a, b in ((4, 0), (3, 1), (6, 2), (7, 5)):
        assert torch.equal(p[a], p[b].flip(0))


def test_zigzag_k_layer_i_uses_path_i_mod_k_on_non_square_grids():
    g = Grid(3, 5)
    scans = IMAGE_SCHEMES["zigzag-4"]().layer_scans(g, 9)
    for i, scan in enumerate(scans):
        assert torch.equal(scan.orders[0], zs.zigzag_paths(3, 5)[i % 4])
    assert zs.zigzag_paths(3, 5)[1][:4].tolist() == [0, 5, 10, 11]     # column-snake of a 3x5 grid


def test_sweep_2_scans_raster_and_reversed_raster_in_every_layer():
    scans = IMAGE_SCHEMES["sweep-2"]().layer_scans(Grid(3, 4, 2), 3)
    for scan in scans:
        assert [o.tolist() for o in scan.orders] == [list(range(24)), list(range(23, -1, -1))]


def test_raster_continuity_is_the_fraction_of_steps_inside_a_row():
    h, w = 6, 10
    assert zs.continuity(IMAGE_SCHEMES["sweep-1"]().layer_scans(Grid(h, w), 1), Grid(h, w)) == \
        pytest.approx(h * (w - 1) / (h * w - 1))


def test_parallel_k_runs_the_first_k_zigzag_paths_inside_every_layer():
    scans = IMAGE_SCHEMES["parallel-4"]().layer_scans(Grid(5, 6), 3)
    for scan in scans:
        assert [o.tolist() for o in scan.orders] == [p.tolist() for p in zs.zigzag_paths(5, 6)[:4]]


def test_jpeg_paths_are_the_classic_zigzag_from_each_corner_with_8_neighbour_steps():
    assert zs.jpeg_paths(4, 4)[0].tolist() == [0, 1, 4, 8, 5, 2, 3, 6, 9, 12, 13, 10, 7, 11, 14, 15]
    h, w = 5, 7
    paths = zs.jpeg_paths(h, w)
    corners = [0, w - 1, (h - 1) * w, h * w - 1]
    assert sorted(p[0].item() for p in paths) == sorted(corners * 2)
    for p in paths:
        r, c = p // w, p % w
        assert torch.maximum(r.diff().abs(), c.diff().abs()).eq(1).all()


def test_spirals_start_at_the_centre_and_alternate_with_their_reversals():
    paths = zs.spiral_paths(5, 5)
    for k in range(0, 8, 2):
        assert paths[k][0].item() == 12
        assert torch.equal(paths[k + 1], paths[k].flip(0))
    assert len({tuple(p.tolist()) for p in paths}) == 8


def test_random_orders_come_from_the_seed_and_leave_the_global_rng_alone():
    g = Grid(6, 6)
    state = torch.get_rng_state()
    a = zs.RandomCycle(4, seed=1, name="r").layer_scans(g, 4)
    b = zs.RandomCycle(4, seed=1, name="r").layer_scans(g, 4)
    c = zs.RandomCycle(4, seed=2, name="r").layer_scans(g, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x.orders[0], y.orders[0]) for x, y in zip(a, b))
    assert not torch.equal(a[0].orders[0], c[0].orders[0])
    expected = torch.randperm(36, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0].orders[0], expected)


def test_factorized_sst_alternates_spatial_zigzag_and_temporal_layers():
    g = Grid(4, 5, 3)
    scans = VIDEO_SCHEMES["video-sst"]().layer_scans(g, 9)
    assert [s.kind for s in scans] == list("sst" * 3)
    spatial = [s for s in scans if s.kind == "s"]
    for j, scan in enumerate(spatial):
        assert scan.segments == 3
        assert torch.equal(scan.orders[0], zs.frame_major(zs.zigzag_paths(4, 5)[j % 8], g))
    temporal = [s for s in scans if s.kind == "t"]
    assert [s.segments for s in temporal] == [20] * 3
    for j, scan in enumerate(temporal):
        seqs = scan.orders[0].reshape(20, 3)                 # one row per location
        assert torch.equal(seqs % 20, torch.arange(20)[:, None].expand(20, 3))
        frames = [0, 1, 2] if j % 2 == 0 else [2, 1, 0]
        assert (seqs // 20).tolist() == [frames] * 20


# Grid(h=1, w=2, t=3): token (frame f, location l) is f*2 + l. The official t layer scans each location across
# frames, (B, C, T*n) -> (B*n, C, T), forward or backward in time (reference §3); written out by hand below,
# with a causal running sum standing in for the mixer and its result per token (f, l) computed on paper:
# forward: sum over f' <= f of x(f', l); reversed: sum over f' >= f (x = 0..5).
@pytest.mark.parametrize("reverse,order,mixed", [
    (False, [0, 2, 4, 1, 3, 5], [0, 1, 2, 4, 6, 9]),
    (True, [4, 2, 0, 5, 3, 1], [6, 9, 6, 8, 4, 5]),
])
def test_temporal_layer_scans_each_location_across_frames_and_writes_results_back_to_their_frame(
        reverse, order, mixed):
    g = Grid(1, 2, 3)
    scan = zs.video.temporal_order(g, reverse=reverse)
    assert scan.orders[0].tolist() == order and scan.segments == 2
    x = torch.arange(6.0).reshape(1, 6, 1)                                  # (B, L, D) frame-major tokens
    y = x[:, scan.orders[0]].reshape(1, 2, 3, 1).cumsum(dim=2).reshape(1, 6, 1)   # causal mix per segment
    assert y[:, scan.inverses[0]].flatten().tolist() == mixed


def test_zigzag_3d_is_one_segment_that_reverses_the_snake_every_frame():
    g = Grid(3, 4, 3)
    scan = VIDEO_SCHEMES["zigzag-3d"]().layer_scans(g, 1)[0]
    p = zs.zigzag_paths(3, 4)[0]
    assert scan.segments == 1
    assert torch.equal(scan.orders[0], torch.cat([p, 12 + p.flip(0), 24 + p]))


def test_video_schemes_refuse_an_image_grid():
    with pytest.raises(ValueError, match="needs a video grid"):
        VIDEO_SCHEMES["video-sst"]().layer_scans(Grid(4, 4), 3)


def test_image_schemes_scan_a_video_frame_major_over_the_whole_sequence():
    g = Grid(3, 3, 2)
    scan = IMAGE_SCHEMES["zigzag-2"]().layer_scans(g, 2)[1]
    p = zs.zigzag_paths(3, 3)[1]
    assert scan.segments == 1 and torch.equal(scan.orders[0], torch.cat([p, 9 + p]))


def test_relative_order_takes_one_scan_order_to_another():
    a, b = zs.zigzag_paths(4, 6)[1], zs.hilbert_paths(4, 6)[3]
    tokens = torch.randn(2, 24, 3)                           # (B, L, D) token-major
    assert torch.equal(tokens[:, a][:, zs.relative_order(a, b)], tokens[:, b])


def test_returned_orders_are_fresh_so_editing_them_leaves_the_cache_intact():
    g = Grid(4, 4)
    first = IMAGE_SCHEMES["hilbert-2"]().layer_scans(g, 2)[0].orders[0]
    first.zero_()
    assert torch.equal(IMAGE_SCHEMES["hilbert-2"]().layer_scans(g, 2)[0].orders[0], zs.hilbert_paths(4, 4)[0])

