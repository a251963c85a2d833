"""The shipped digits classifier and the digits FID."""

import json
import os

import numpy as np
import pytest
import torch

from asintrovae_hf.evaluation.digits_classifier import (
    FEATURE_DIM,
    METADATA_PATH,
    WEIGHTS_PATH,
    DigitsClassifier,
    digits_fid,
    digits_split,
    digits_to_tensor,
    load_digits_classifier,
    load_digits_uint8,
    read_digits_classifier_metadata,
)


@pytest.fixture(scope="module")
def classifier():
    return load_digits_classifier()


@pytest.fixture(scope="module")
def digits():
    return load_digits_uint8()


@pytest.fixture(scope="module")
def heldout(digits):
    pixels, labels = digits
    _, test_idx = digits_split(labels)
    return pixels[test_idx], torch.from_numpy(labels[test_idx])


def test_shipped_file_is_small_and_documented():
    assert os.path.isfile(WEIGHTS_PATH)
    assert os.path.getsize(WEIGHTS_PATH) < 1 << 20
    header = read_digits_classifier_metadata()
    with open(METADATA_PATH) as f:
        sidecar = json.load(f)
    assert header == sidecar
    for key in ("heldout_accuracy", "heldout_accuracy_by_resolution", "seed", "split_seed", "test_size", "split"):
        assert key in header
    assert header["heldout_accuracy"] >= 0.97


def test_convention(digits):
    pixels, labels = digits
    assert pixels.shape == (1797, 8, 8) and pixels.dtype == np.uint8 and pixels.max() == 255
    x = digits_to_tensor(pixels[:4], 8)
    assert x.shape == (4, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x[:, 0].numpy(), pixels[:4] / 255 * 2 - 1, atol=1e-6)
    assert digits_to_tensor(pixels[:4], 20).shape == (4, 1, 20, 20)


def test_split_is_fixed_and_stratified(digits):
    _, labels = digits
    train, test = digits_split(labels)
    assert len(train) == 1437 and len(test) == 360 and not set(train) & set(test)
    np.testing.assert_array_equal(test, digits_split(labels)[1])
    np.testing.assert_allclose(np.bincount(labels[test]) / len(test), np.bincount(labels) / len(labels), atol=0.01)


@pytest.mark.parametrize("resolution", [8, 16, 28, 32])
def test_heldout_accuracy_matches_the_record(classifier, heldout, resolution):
    pixels, labels = heldout
    with torch.no_grad():
        acc = (classifier(digits_to_tensor(pixels, resolution)).argmax(1) == labels).float().mean().item()
    recorded = classifier.metadata["heldout_accuracy_by_resolution"].get(str(resolution),
                                                                           classifier.metadata["heldout_accuracy"])
    assert acc >= recorded - 0.005
    assert acc >= 0.97


def test_shapes_channels_and_sizes(classifier, heldout):
    x = digits_to_tensor(heldout[0][:6], 16)
    with torch.no_grad():
        feats = classifier.features(x)
        assert feats.shape == (6, FEATURE_DIM) and classifier(x).shape == (6, 10)
        torch.testing.assert_close(classifier.features(x.repeat(1, 3, 1, 1)), feats)
        for size in (8, 13, 32, 64):
            assert classifier.features(torch.nn.functional.interpolate(x, size=size)).shape == (6, FEATURE_DIM)
    with pytest.raises(ValueError):
        classifier.features(torch.zeros(2, 2, 8, 8))


def test_features_are_stable_across_sizes(classifier, digits):
    pixels, _ = digits
    with torch.no_grad():
        f8 = classifier.features(digits_to_tensor(pixels[:300], 8))
        f32 = classifier.features(digits_to_tensor(pixels[:300], 32))
    cos = torch.nn.functional.cosine_similarity(f8, f32, dim=1)
    assert cos.mean() > 0.9


def test_untrained_model_is_a_plain_module():
    model = DigitsClassifier()
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) * 4 < 1 << 20


def test_digits_fid(classifier, digits):
    pixels, _ = digits
    real = digits_to_tensor(pixels, 16)
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half_a, half_b = real[perm[: len(real) // 2]], real[perm[len(real) // 2 :]]
    noise = torch.rand(len(real), 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1

    same = digits_fid(real, real, classifier)
    halves = digits_fid(half_a, half_b, classifier)
    vs_noise = digits_fid(real, noise, classifier)
    assert abs(same) < 1e-6
    assert halves > 0
    assert vs_noise > 20 * halves
    # the [0, 1] range of pipeline outputs gives the same value
    assert digits_fid((half_a + 1) / 2, (half_b + 1) / 2, classifier, value_range=(0, 1)) == pytest.approx(halves,
                                                                                                         rel=1e-4)
    # images at another size are compared through the classifier's own 16x16 resize
    assert digits_fid(digits_to_tensor(pixels, 8), real, classifier) < vs_noise / 10


def test_mnist_5k_classifier_is_trained_on_the_train_split_and_scores_its_record_on_the_held_out_split():
    from asintrovae_hf.evaluation.heldout import load_classifier, split_images

    classifier = load_classifier("mnist-5k")
    record = classifier.metadata
    assert record["dataset"] == "mnist-5k" and record["resolution"] == classifier.resolution == 28
    assert record["num_train"] == 4000 and record["num_heldout"] == 1000
    images, labels = split_images("mnist-5k", "test", 28)
    with torch.no_grad():
        accuracy = (classifier(images * 2 - 1).argmax(1) == labels).double().mean().item()
    assert accuracy == pytest.approx(record["heldout_accuracy_by_resolution"]["28"], abs=1e-3) and accuracy > 0.98
    with pytest.raises(ValueError, match="No held-out classifier for 'cifar10'; datasets with one: digits, mnist-5k"):
        load_classifier("cifar10")
