"""cond-accuracy: a classifier trained on real shapes scores whether samples show their prompted attributes."""

import dataclasses

import pytest
import torch

from plugins._metrics import cond_accuracy
from plugins.errors import DataError
from plugins.registry import load_registries
from plugins.specs import MetricContext

torch.set_num_threads(1)
OPTIONS = {"num_train": 2000, "epochs": 5}


def _metric():
    entry = load_registries().metrics.get("cond-accuracy")
    return entry.build(**entry.options(**OPTIONS).model_dump())


@pytest.fixture(scope="module")
def shapes():
    entry = load_registries().datasets.get("shapes")
    return entry.load(entry.options(num_train=2400, num_reference=10))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cond"))


def _ctx(bundle, cache, **kw):
    return MetricContext(data=bundle, device=torch.device("cpu"), cache_dir=cache, progress=False, **kw)


def test_unseen_real_shapes_score_near_one_and_mismatched_labels_near_chance(shapes, cache):
    images, labels = shapes.train.uint8()[2000:], shapes.train.labels[2000:]      # not used for training
    right = _metric().compute(images, _ctx(shapes, cache, labels=labels))
    wrong = _metric().compute(images, _ctx(shapes, cache, labels=labels.roll(1)))
    assert right["cond-accuracy"] > 0.95 and right["meta.classifier_heldout_accuracy"] > 0.95
    assert wrong["cond-accuracy"] < 0.1
    assert {"cond-accuracy.colour", "cond-accuracy.shape", "cond-accuracy.position"} <= set(right)


def test_captions_and_labels_give_the_same_score(shapes, cache):
    images, labels = shapes.train.uint8()[2000:2100], shapes.train.labels[2000:2100]
    captions = shapes.train.captions[2000:2100]
    by_label = _metric().compute(images, _ctx(shapes, cache, labels=labels))
    by_caption = _metric().compute(images, _ctx(shapes, cache, captions=captions))
    assert by_label == by_caption


def test_the_classifier_is_trained_once_and_cached_on_disk(shapes, cache, monkeypatch, tmp_path):
    images, labels = shapes.train.uint8()[2000:2050], shapes.train.labels[2000:2050]
    first = _metric().compute(images, _ctx(shapes, cache, labels=labels))   # trained by an earlier test or now

    def no_training(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(cond_accuracy, "train_classifier", no_training)
    again = _metric().compute(images, _ctx(shapes, cache, labels=labels))
    assert again == first
    with pytest.raises(AssertionError, match="retrained"):          # a different data fingerprint retrains
        other = dataclasses.replace(shapes, info=dataclasses.replace(shapes.info, fingerprint="other"))
        _metric().compute(images, _ctx(other, str(tmp_path), labels=labels))


def test_a_dataset_without_attributes_is_a_data_error(tmp_path):
    entry = load_registries().datasets.get("digits")
    digits = entry.load(entry.options(num_train=20))
    with pytest.raises(DataError, match="attribute labels"):
        _metric().compute(digits.reference(4), _ctx(digits, str(tmp_path), labels=torch.zeros(4, dtype=torch.long)))


def test_the_null_class_is_not_a_valid_conditioning_label(shapes, cache):
    images = shapes.train.uint8()[:2]
    with pytest.raises(ValueError, match="class indices below 72"):
        _metric().compute(images, _ctx(shapes, cache, labels=torch.tensor([0, 72])))


def test_the_classifiers_accuracy_on_the_held_out_real_shapes_is_recorded_with_its_count(shapes, cache):
    """Oracle: the classifier the metric cached, run by hand on the held-out real images (each head's argmax
    against the true attribute, counted per attribute and for all three at once)."""
    from pathlib import Path

    from plugins._metrics.cond_accuracy import AttributeClassifier

    real, attrs = shapes.extras["reference_images"], shapes.extras["reference_attributes"]
    fake = shapes.train.uint8()[2000:2040]
    out = _metric().compute(fake, _ctx(shapes, cache, labels=shapes.train.labels[2000:2040]))
    (saved_path,) = Path(cache).glob("cond-classifier-shapes-*.pt")
    saved = torch.load(saved_path, weights_only=True)
    model = AttributeClassifier(saved["in_channels"], [len(v) for v in shapes.extras["attributes"].values()])
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        right = torch.stack([head.argmax(-1) for head in model.eval()(real)], -1) == attrs      # (10, 3)
    assert out["meta.classifier_real_n"] == 10 == len(real)
    assert out["meta.classifier_real_accuracy"] == pytest.approx(right.all(-1).sum().item() / 10)
    for a, name in enumerate(("colour", "shape", "position")):
        assert out[f"meta.classifier_real_accuracy.{name}"] == pytest.approx(right[:, a].sum().item() / 10)
    assert out["meta.classifier_heldout_n"] == 200            # 10 % of num_train=2000