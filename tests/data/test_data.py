"""Data loading: the built-in digits, image folders, saved and file datasets, the image column, the transform."""

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch

from asintrovae_hf.data import (
    ImageTransform,
    collate_fn,
    load_digits_dataset,
    load_image_dataset,
    make_train_dataset,
    resolve_image_column,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network: both libraries read these variables at import, so set their flags too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # datasets 2.18 (the floor) has only the second
        if hasattr(datasets.config, flag):
            monkeypatch.setattr(datasets.config, flag, True)


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def small_dataset(n=6, size=(10, 6)):
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]
    return datasets.Dataset.from_dict(
        {"caption": [f"c{i}" for i in range(n)], "picture": images, "label": list(range(n))},
        features=datasets.Features(
            {"caption": datasets.Value("string"), "picture": datasets.Image(), "label": datasets.Value("int64")}
        ),
    )


def write_image_folder(root):
    (root / "red").mkdir(parents=True)
    (root / "gray").mkdir()
    PIL.Image.new("RGBA", (12, 8), (255, 0, 0, 128)).save(root / "red" / "a.png")
    PIL.Image.new("RGB", (9, 9), (200, 10, 10)).save(root / "red" / "b.png")
    PIL.Image.new("L", (7, 11), 100).save(root / "gray" / "c.png")
    (root / "notes.txt").write_text("not an image")
    return root


# ---- digits --------------------------------------------------------------------------------------------------


def test_digits_dataset_matches_sklearn_under_the_shared_convention(digits):
    from sklearn.datasets import load_digits

    reference = load_digits()
    assert len(digits) == 1797
    assert isinstance(digits.features["image"], datasets.Image)
    assert isinstance(digits.features["label"], datasets.ClassLabel)
    assert digits.features["label"].names == [str(i) for i in range(10)]
    first = digits[0]["image"]
    assert first.mode == "L" and first.size == (8, 8)
    pixels = np.stack([np.asarray(image) for image in digits["image"]])
    expected = np.array([[[round(v * 255 / 16) for v in row] for row in image] for image in reference.images])
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))
    assert pixels.max() == 255 and pixels.min() == 0 and 128 in pixels  # v = 16, v = 0 and v = 8
    assert digits["label"] == reference.target.tolist()


@pytest.mark.parametrize("name", [None, "digits"])
def test_default_dataset_is_the_digits_train_split(name):
    dataset = load_image_dataset(name)
    assert len(dataset) == 1437 and resolve_image_column(dataset) == "image"
    assert len(load_image_dataset(name, split="test")) == 360 and len(load_image_dataset(name, split="all")) == 1797


# ---- sources -------------------------------------------------------------------------------------------------


def test_image_folder_with_rgba_and_grayscale_files(tmp_path):
    root = write_image_folder(tmp_path / "images")
    dataset = load_image_dataset(train_data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert len(dataset) == 3
    column = resolve_image_column(dataset)
    assert column == "image" and set(dataset.features["label"].names) == {"red", "gray"}
    modes = sorted(image.mode for image in dataset[column])
    assert modes == ["L", "RGB", "RGBA"]
    transform = ImageTransform(8, 3, center_crop=True)
    batch = collate_fn(list(make_train_dataset(dataset, column, transform)))
    assert batch["pixel_values"].shape == (3, 3, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_dataset(train_data_dir=str(tmp_path / "missing"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="No image files found"):
        load_image_dataset(train_data_dir=str(tmp_path / "text"))
    with pytest.raises(ValueError, match="not both"):
        load_image_dataset("digits", train_data_dir=str(tmp_path / "text"))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_dataset(str(tmp_path / "no_such_dataset"))


def test_saved_to_disk_dataset_and_dataset_dict(tmp_path):
    small_dataset().save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(str(tmp_path / "saved"))
    assert len(dataset) == 6 and resolve_image_column(dataset) == "picture"

    datasets.DatasetDict({"train": small_dataset(4), "test": small_dataset(2)}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_image_dataset(str(tmp_path / "dict"))) == 4
    assert len(load_image_dataset(str(tmp_path / "dict"), split="test")) == 2
    with pytest.raises(ValueError, match="'validation'.*train, test"):
        load_image_dataset(str(tmp_path / "dict"), split="validation")


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_load_dataset_from_a_local_directory_and_file(tmp_path, fmt):
    directory = tmp_path / fmt
    directory.mkdir()
    path = directory / f"train.{fmt}"
    data = small_dataset()
    if fmt == "parquet":
        data.to_parquet(str(path))
    else:
        import pyarrow as pa

        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, data.data.table.schema) as writer:
            writer.write_table(data.data.table)
    for source in (str(directory), str(path)):
        dataset = load_image_dataset(source, cache_dir=str(tmp_path / "cache"))
        assert len(dataset) == 6 and resolve_image_column(dataset) == "picture"
        assert dataset[0]["picture"].size == (10, 6)


# ---- image column --------------------------------------------------------------------------------------------


def test_image_column_default_and_errors():
    dataset = small_dataset()
    assert resolve_image_column(dataset) == "picture"
    assert resolve_image_column(dataset, "picture") == "picture"
    with pytest.raises(ValueError) as info:
        resolve_image_column(dataset, "photo")
    message = str(info.value)
    assert "'photo'" in message and all(f"'{c}'" in message for c in ("caption", "picture", "label"))
    with pytest.raises(ValueError, match="'caption' holds Value"):
        resolve_image_column(dataset, "caption")
    with pytest.raises(ValueError, match=r"no image column.*'caption' \(Value\).*'label' \(Value\)"):
        resolve_image_column(dataset.remove_columns("picture"))


# ---- transform -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, channels",
    [
        (PIL.Image.new("RGB", (20, 12), (255, 0, 0)), 1),
        (PIL.Image.new("RGB", (20, 12), (255, 0, 0)), 3),
        (PIL.Image.new("RGBA", (12, 20), (0, 255, 0, 0)), 3),
        (PIL.Image.new("L", (16, 16), 255), 3),
        (PIL.Image.new("P", (9, 30), 3), 1),
        (PIL.Image.new("1", (8, 8), 1), 1),
        (PIL.Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)), 1),
        (PIL.Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)), 3),
        (np.zeros((5, 7, 3), dtype=np.uint8), 3),
    ],
    ids=["rgb-to-l", "rgb", "rgba", "l-to-rgb", "palette", "bilevel", "16bit-l", "16bit-rgb", "array"],
)
def test_transform_shape_range_and_channels(image, channels):
    out = ImageTransform(8, channels)(image)
    assert out.shape == (channels, 8, 8) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert ImageTransform(8, channels, normalize=True)(image).min() >= -1


def test_transform_values():
    red = ImageTransform(4, 3)(PIL.Image.new("RGB", (4, 4), (255, 0, 0)))
    assert torch.equal(red[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    luma = ImageTransform(4, 1)(PIL.Image.new("RGB", (4, 4), (255, 0, 0)))
    assert luma[0, 0, 0].item() == pytest.approx(76 / 255)  # ITU-R 601-2: 0.299 * 255, as PIL's convert("L")
    rgba = ImageTransform(4, 3)(PIL.Image.new("RGBA", (4, 4), (0, 255, 0, 0)))
    assert torch.equal(rgba[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))  # alpha dropped, as PIL's convert("RGB")
    white16 = ImageTransform(4, 1)(PIL.Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)))
    mid16 = ImageTransform(4, 1)(PIL.Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)))  # 128 * 257
    assert torch.allclose(white16, torch.ones(1, 4, 4)) and torch.allclose(mid16, torch.full((1, 4, 4), 128 / 255))
    normalized = ImageTransform(4, 1, normalize=True)(PIL.Image.new("L", (4, 4), 255))
    assert torch.equal(normalized, torch.ones(1, 4, 4))
    assert torch.equal(ImageTransform(4, 1, normalize=True)(PIL.Image.new("L", (4, 4), 0)), -torch.ones(1, 4, 4))


def test_transform_resizes_the_shorter_side_bilinearly():
    rng = np.random.default_rng(1)
    image = PIL.Image.fromarray(rng.integers(0, 256, (24, 36), dtype=np.uint8))  # H=24, W=36
    out = ImageTransform(8, 1, center_crop=True)(image)
    resized = np.asarray(image.resize((12, 8), resample=PIL.Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(out[0].numpy(), resized[:, 2:10], atol=1e-6)


def test_center_crop_picks_the_centre():
    pixels = np.zeros((8, 16), dtype=np.uint8)  # H=8, W=16: the crop keeps columns 4..11
    pixels[:, 4:12] = 255
    out = ImageTransform(8, 1, center_crop=True)(PIL.Image.fromarray(pixels))
    assert torch.equal(out, torch.ones(1, 8, 8))
    tall = np.zeros((20, 10), dtype=np.uint8)  # H=20, W=10: the crop keeps rows 5..14
    tall[5:15] = 255
    assert torch.equal(ImageTransform(10, 1, center_crop=True)(PIL.Image.fromarray(tall)), torch.ones(1, 10, 10))


def test_random_crop_and_flip_are_reproducible_and_random():
    pixels = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12)
    image = PIL.Image.fromarray(pixels)
    transform = ImageTransform(8, 1, random_flip=True)

    def draw(seed, n=32):
        torch.manual_seed(seed)
        return torch.stack([transform(image) for _ in range(n)])

    first, again = draw(0), draw(0)
    assert torch.equal(first, again)
    assert not torch.equal(first, draw(1))
    crops = {tuple(t[0, 0].tolist()) for t in first}
    reference = torch.from_numpy(pixels.astype(np.float32) / 255)
    flipped = 0
    for t in first:
        row = t[0]
        windows = [reference[:, left:left + 8] for left in range(5)]
        if any(torch.equal(row, w) for w in windows):
            continue
        assert any(torch.equal(row, w.flip(-1)) for w in windows)
        flipped += 1
    assert 0 < flipped < len(first) and len(crops) > 2


def test_center_crop_draws_no_crop_and_no_flip_without_random_flip():
    image = PIL.Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    torch.manual_seed(0)
    outs = [ImageTransform(8, 1, center_crop=True)(image) for _ in range(4)]
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert torch.equal(outs[0][0], torch.from_numpy(np.asarray(image, dtype=np.float32) / 255))


def test_transform_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_channels"):
        ImageTransform(8, 4)
    with pytest.raises(ValueError, match="resolution"):
        ImageTransform(0, 1)


# ---- train dataset and collate -------------------------------------------------------------------------------


def test_make_train_dataset_and_collate(digits):
    train = make_train_dataset(digits.select(range(10)), "image", ImageTransform(16, 1, center_crop=True))
    example = train[0]
    assert set(example) == {"pixel_values"} and example["pixel_values"].shape == (1, 16, 16)
    batch = collate_fn([train[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 1, 16, 16) and batch["pixel_values"].is_contiguous()
    assert torch.equal(batch["pixel_values"][2], train[2]["pixel_values"])
    loader = torch.utils.data.DataLoader(train, batch_size=5, collate_fn=collate_fn)
    assert [b["pixel_values"].shape for b in loader] == [(5, 1, 16, 16)] * 2
    assert "label" in digits.column_names and digits.format["type"] is None  # the source is unchanged
    with pytest.raises(ValueError):
        collate_fn([])
