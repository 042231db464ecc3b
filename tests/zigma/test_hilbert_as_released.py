"""`hilbert-as-released-K`: layer i scans the official code's path i (mod K), checked against the official
generator written out here independently of zigma.scans.

The official ZigMa code (CompVis/zigma, `hilbert_path(N)`, ported from jakubcerveny/gilbert) builds an N x N matrix
R[x, y] = the position of cell (x, y) along the generalized Hilbert ("gilbert") curve of an N x N grid, then the
8 matrices [R, Rᵀ, rot90(R), rot90(R)ᵀ, rot180(R), rot180(R)ᵀ, rot270(R), rot270(R)ᵀ] (numpy rot90,
counter-clockwise), each flattened row-major, and uses list entry i as the token order of layer i mod K (a rank map
used as a gather path). The curve: gilbert2d(w, h) starts at (0, 0) with major axis a = (w, 0) when w >= h.
"""

import itertools

import numpy as np
import pytest

import zigma.scans as zs


def _sgn(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert_cells(x, y, ax, ay, bx, by):
    """The generalized Hilbert curve over the block spanned by a = (ax, ay) and b = (bx, by) from (x, y)."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day, dbx, dby = _sgn(ax), _sgn(ay), _sgn(bx), _sgn(by)
    if h == 1:
        return [(x + i * dax, y + i * day) for i in range(w)]
    if w == 1:
        return [(x + i * dbx, y + i * dby) for i in range(h)]
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * w > 3 * h:                                   # long block: split along a
        if abs(ax2 + ay2) % 2 and w > 2:
            ax2, ay2 = ax2 + dax, ay2 + day
        return (_gilbert_cells(x, y, ax2, ay2, bx, by)
                + _gilbert_cells(x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by))
    if abs(bx2 + by2) % 2 and h > 2:
        bx2, by2 = bx2 + dbx, by2 + dby
    return (_gilbert_cells(x, y, bx2, by2, ax2, ay2)                                  # up
            + _gilbert_cells(x + bx2, y + by2, ax, ay, bx - bx2, by - by2)            # across
            + _gilbert_cells(x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby),
                             -bx2, -by2, -(ax - ax2), -(ay - ay2)))                   # down


def official_hilbert_path(n: int) -> list[np.ndarray]:
    """The official `hilbert_path(N)` list of 8 flattened rank maps."""
    rank = np.zeros((n, n), dtype=np.int64)
    for i, (x, y) in enumerate(_gilbert_cells(0, 0, n, 0, 0, n)):
        rank[x, y] = i
    mats = []
    for k in range(4):
        r = np.rot90(rank, k)
        mats += [r, np.transpose(r)]
    return [m.flatten() for m in mats]


def test_the_oracle_is_a_hilbert_curve_visiting_every_cell_once():
    cells = _gilbert_cells(0, 0, 16, 0, 0, 16)
    assert sorted(cells) == [(x, y) for x in range(16) for y in range(16)]
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in itertools.pairwise(cells))


@pytest.mark.parametrize("n", [4, 8, 16])
@pytest.mark.parametrize("k", [1, 4, 8])
def test_hilbert_as_released_k_layer_i_scans_the_official_path_i_mod_k(n, k):
    official = official_hilbert_path(n)
    scheme = zs.LayerCycle(zs.hilbert_as_released_paths, k, name=f"hilbert-as-released-{k}")
    layers = scheme.layer_scans(zs.Grid(n, n), 8)
    for i, scan in enumerate(layers):
        assert len(scan.orders) == 1
        assert np.array_equal(scan.orders[0].numpy(), official[i % k]), f"layer {i}"
