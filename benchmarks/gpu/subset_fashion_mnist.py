"""Write the first N train / M test Fashion-MNIST items as IDX .gz files (same format, smaller), so a GPU run can
carry real data within the device tool's 64 MiB limit. Usage:
    python benchmarks/gpu/subset_fashion_mnist.py /usr/share/datasets/fashion-mnist .gpu/study/data/fashion-mnist 10000 4000
"""

import gzip
import struct
import sys
from pathlib import Path


def _subset(src: Path, dst: Path, n: int) -> None:
    with gzip.open(src) as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    dims = (magic & 0xFF) - 1                      # number of dimensions after the first
    header = 8 + 4 * dims
    item = 1
    for i in range(dims):
        item *= struct.unpack(">I", data[8 + 4 * i: 12 + 4 * i])[0]
    n = min(n, count)
    out = data[:4] + struct.pack(">I", n) + data[8:header] + data[header: header + n * item]
    with gzip.open(dst, "wb", compresslevel=9) as f:
        f.write(out)


def main(src: str, dst: str, n_train: int, n_test: int) -> None:
    s, d = Path(src), Path(dst)
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
            _subset(s / f"{prefix}-{kind}", d / f"{prefix}-{kind}", n)
    print(f"wrote {n_train} train / {n_test} test items to {d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
