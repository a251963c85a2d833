"""Damaged images, in an image folder or a dataset's image column: skipped with a warning naming each, and the run
finishes. Every kind: a compressed stream cut inside valid chunks (passes PIL's `verify()`), a cut file, zero bytes,
text under an image extension, and declared dimensions beyond PIL's decompression-bomb limit."""

import io
import os
import struct
import zlib

import datasets
import numpy as np
import PIL.Image
import pytest

from asintrovae_hf.data.images import _is_readable, drop_unreadable_images
from asintrovae_hf.training.loop import main, train
from asintrovae_hf.training.args import parse_args
from helpers import TINY

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def png_bytes(seed: int, size: int = 10) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def chunks(data: bytes):
    """A PNG's chunks as (type, payload)."""
    out, i = [], 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + length]))
        i += 12 + length
    return out


def build_png(parts) -> bytes:
    body = b"".join(struct.pack(">I", len(p)) + t + p + struct.pack(">I", zlib.crc32(t + p)) for t, p in parts)
    return b"\x89PNG\r\n\x1a\n" + body


def cut_stream(data: bytes) -> bytes:
    """Every chunk valid (lengths, CRCs), but the compressed pixel stream stops half-way."""
    return build_png([(t, p[: len(p) // 2] if t == b"IDAT" else p) for t, p in chunks(data)])


def declared_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG with another width and height in its header (a decompression bomb when they are huge)."""
    return build_png([(t, struct.pack(">II", width, height) + p[8:] if t == b"IHDR" else p) for t, p in chunks(data)])


GOOD = png_bytes(0)
DAMAGED = {
    "cut-stream.png": cut_stream(png_bytes(1, 64)),
    "cut-file.png": GOOD[:40],
    "empty.png": b"",
    "text.png": b"this is not an image\n" * 10,
    "bomb.png": declared_size(GOOD, 30000, 30000),  # 9 x 10^8 pixels: above twice PIL's limit, an error at open
    "big.png": declared_size(GOOD, 10000, 10000),  # 10^8 pixels: above PIL's limit, below twice it (a warning)
}


def undecoded(data: bytes):
    return {"bytes": data, "path": None}


def test_each_kind_of_damage_is_unreadable_and_verify_alone_misses_the_cut_stream():
    with PIL.Image.open(io.BytesIO(DAMAGED["cut-stream.png"])) as image:
        image.verify()  # the control: PIL's integrity check passes, decoding then fails
    with pytest.raises(OSError):
        with PIL.Image.open(io.BytesIO(DAMAGED["cut-stream.png"])) as image:
            image.load()
    assert _is_readable(undecoded(GOOD))
    for name, data in DAMAGED.items():
        assert not _is_readable(undecoded(data)), name
    assert not _is_readable(None)  # a missing image in a dataset column


def test_a_fifo_or_missing_path_is_unreadable_without_blocking(tmp_path):
    import threading

    os.mkfifo(tmp_path / "fifo.png")
    results = []
    for path in (tmp_path / "fifo.png", tmp_path / "gone.png"):
        thread = threading.Thread(target=lambda p=path: results.append(_is_readable({"bytes": None, "path": str(p)})),
                                  daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), f"_is_readable blocked on {path.name}"
    assert results == [False, False]


def image_folder(root, good: int = 16, with_fifo: bool = False):
    root.mkdir()
    for i in range(good):
        (root / f"{i}.png").write_bytes(png_bytes(i + 10))
    for name, data in DAMAGED.items():
        (root / name).write_bytes(data)
    (root / "a-png-named.jpg").write_bytes(png_bytes(99))  # the wrong extension, a good image: kept
    if with_fifo:
        os.mkfifo(root / "fifo.png")  # opening it would block the run (datasets' imagefolder leaves it out)
    return root


def test_a_run_over_a_folder_with_damaged_files_finishes(tmp_path, caplog):
    folder = image_folder(tmp_path / "images", with_fifo=True)
    with caplog.at_level("WARNING"):
        summary = train(parse_args(TINY + ["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "o"),
                                           "--max_train_steps", "4", "--train_batch_size", "8",
                                           "--save_images_steps", "1000"]))
    assert summary["global_step"] == 4
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping ")]
    assert sorted(m.split()[1] for m in skipped) == sorted(DAMAGED), skipped
    assert all(str(folder) in m and "\n" not in m for m in skipped)
    assert "a-png-named.jpg" not in caplog.text


def test_damaged_images_in_a_dataset_column_are_skipped(tmp_path, caplog):
    rows = [undecoded(png_bytes(i)) for i in range(16)] + [undecoded(DAMAGED["cut-stream.png"]),
                                                           undecoded(DAMAGED["text.png"]), None]
    dataset = datasets.Dataset.from_dict({"img": rows}, features=datasets.Features({"img": datasets.Image()}))
    dataset.save_to_disk(str(tmp_path / "ds"))
    with caplog.at_level("WARNING"):
        summary = train(parse_args(TINY + ["--dataset_name", str(tmp_path / "ds"), "--output_dir",
                                           str(tmp_path / "o"), "--max_train_steps", "2", "--train_batch_size", "8",
                                           "--save_images_steps", "1000"]))
    assert summary["global_step"] == 2
    for row in (16, 17, 18):
        assert f"Skipping row {row} in " in caplog.text


def test_drop_unreadable_images_reads_in_batches(tmp_path):
    rows = [undecoded(png_bytes(i)) if i % 3 else undecoded(b"") for i in range(10)]
    dataset = datasets.Dataset.from_dict({"img": rows}, features=datasets.Features({"img": datasets.Image()}))
    kept, dropped = drop_unreadable_images(dataset, "img", batch_size=4)
    assert dropped == ["row 0", "row 3", "row 6", "row 9"] and len(kept) == 6
    assert all(isinstance(image, PIL.Image.Image) for image in kept["img"])


def test_a_folder_of_damaged_files_only_is_one_line(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, data in DAMAGED.items():
        (folder / name).write_bytes(data)
    assert main(TINY + ["--train_data_dir", str(folder), "--output_dir", str(tmp_path / "o"),
                        "--max_train_steps", "1"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and f"No readable image in {str(folder)!r}" in lines[0]
    assert f"({len(DAMAGED)} unreadable files)" in lines[0]
