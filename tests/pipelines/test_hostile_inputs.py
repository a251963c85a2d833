"""Hostile and unusual image inputs (issue 20, item 1): every PIL mode, NumPy dtype and rank, tensor dtype and device,
and lists mixing them go through `AsIntroVAEImageProcessor`, the pipeline's one conversion. Each input either gives
the exact values it stands for or is refused with one line naming what was expected and what was given.

The inputs are built here: PIL images of every mode, a 16-bit PNG written with PIL, mode-F images with NaN or
values out of range, 0 x 0 images, `H x W x 3` arrays for a 1-channel model, lists of images of different sizes,
meta and sparse tensors, arrays of every dtype, byte order and stride.
"""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from asintrovae_hf.pipelines.pipeline_asintrovae import AsIntroVAEImageProcessor
from helpers import tiny_image_pipeline, tiny_vector_pipeline

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gray():
    return tiny_image_pipeline(channels=1, size=SIZE)


@pytest.fixture(scope="module")
def rgb():
    return tiny_image_pipeline(channels=3, size=SIZE)


def refused(call, error=ValueError, match=None):
    """`call` raises `error` with a one-line message that says what was given (and `match`, if given)."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert "got" in message and any(w in message for w in ("expected", "takes", "must", "read as")), message
    if match is not None:
        assert match in message, message
    return message


def rng(seed=0):
    return np.random.default_rng(seed)


def gray_u8(seed=0, size=SIZE):
    return rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def rgb_u8(seed=0, size=SIZE):
    return rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def as_pixels(array):
    """An `H x W` or `H x W x C` array of values in [0, 1] as the `1 x C x H x W` float32 tensor it stands for."""
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))
    return (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]).contiguous()


# ---- the known examples ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_h_w_c_array_to_a_one_channel_model_is_refused_not_read_as_a_batch(gray, channels):
    """It used to come back as 16 gray images, one per row."""
    message = refused(lambda: gray.reconstruct(rng().random((SIZE, SIZE, channels)), output_type="pt"),
                      match=f"got an array of shape (16, 16, {channels})")
    assert "(height, width, 1)" in message
    refused(lambda: gray.reconstruct(rng().random((5, SIZE, SIZE))), match="got an array of shape (5, 16, 16)")


def test_one_channel_arrays_in_every_layout_give_the_same_image(gray):
    image = rng().random((SIZE, SIZE))
    expected = gray.preprocess(torch.from_numpy(image)[None, None].float())
    for given in (image, image[..., None], image[None, ..., None], torch.from_numpy(image)[None],
                  torch.from_numpy(image)):
        torch.testing.assert_close(gray.preprocess(given), expected, rtol=0, atol=0)


def test_16_bit_png_is_read_exactly(gray, rgb, tmp_path):
    """A 16-bit PNG (PIL mode I;16, or I in older Pillow) is divided by 65535; it used to saturate at 8 bits."""
    values = rng().integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    PIL.Image.fromarray(values).save(tmp_path / "deep.png")
    image = PIL.Image.open(tmp_path / "deep.png")
    assert image.mode in ("I;16", "I")
    expected = torch.from_numpy(values.astype(np.float64) / 65535).float()
    pixels = gray.preprocess(image)
    torch.testing.assert_close(pixels, expected[None, None], rtol=0, atol=0)
    assert (pixels == 1).float().mean() < 0.01  # the old reading clipped nearly every pixel to 1
    torch.testing.assert_close(rgb.preprocess(image), expected[None, None].expand(1, 3, SIZE, SIZE), rtol=0, atol=0)
    torch.testing.assert_close(gray.reconstruct(image, output_type="pt").images,
                               gray.reconstruct(expected[None, None], output_type="pt").images, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_mode_is_divided_by_65535(gray, mode):
    values = rng(1).integers(0, 65536, (SIZE, SIZE)).astype(np.uint16)
    data = values.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    image = PIL.Image.frombytes(mode, (SIZE, SIZE), data)
    torch.testing.assert_close(gray.preprocess(image), as_pixels(values / 65535), rtol=0, atol=0)


def test_mode_i_is_read_as_16_bit_data_or_refused(gray):
    values = rng(2).integers(0, 65536, (SIZE, SIZE)).astype(np.int32)
    image = PIL.Image.frombytes("I", (SIZE, SIZE), values.astype("<i4").tobytes())
    assert image.mode == "I"
    torch.testing.assert_close(gray.preprocess(image), as_pixels(values / 65535), rtol=0, atol=0)
    for bad in (70000, -1):
        refused(lambda: gray.preprocess(PIL.Image.new("I", (SIZE, SIZE), bad)), match="values 0..65535")


def test_mode_f_is_checked_like_float_arrays(gray):
    values = rng(3).random((SIZE, SIZE)).astype(np.float32)
    image = PIL.Image.fromarray(values)
    assert image.mode == "F"
    torch.testing.assert_close(gray.preprocess(image), as_pixels(values), rtol=0, atol=0)
    for bad, match in ((np.nan, "NaN"), (np.inf, "infinite"), (1.5, "to 1.5"), (-0.25, "from -0.25")):
        data = values.copy()
        data[3, 4] = bad
        refused(lambda: gray.preprocess(PIL.Image.fromarray(data)), match=match)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (5, 0)])
def test_empty_pil_images_are_refused(gray, size):
    refused(lambda: gray.preprocess(PIL.Image.new("L", size)), match="empty PIL image")


@pytest.mark.parametrize("shape", [(0, SIZE, SIZE, 1), (SIZE, 0, 1), (0, 0, 1), (1, 0, 7, 1)])
def test_empty_arrays_and_tensors_are_refused(gray, shape):
    refused(lambda: gray.preprocess(np.zeros(shape, np.float32)), match="empty array")
    tensor_shape = (shape[0], 1, *shape[1:3]) if len(shape) == 4 else (1, *shape[:2])
    refused(lambda: gray.preprocess(torch.zeros(tensor_shape)), match="empty tensor")


def test_lists_of_different_sizes_and_kinds_are_resized_one_by_one(gray):
    """They used to end in a RuntimeError of torch.cat."""
    items = [rng(4).random((SIZE, SIZE, 1)).astype(np.float32), rng(5).random((9, 23, 1)),
             torch.rand(1, 7, 5, generator=torch.Generator().manual_seed(0)),
             PIL.Image.fromarray(gray_u8(6, size=40)),
             torch.rand(2, 1, 30, 30, generator=torch.Generator().manual_seed(1))]
    pixels = gray.preprocess(items)
    assert pixels.shape == (6, 1, SIZE, SIZE) and pixels.dtype == torch.float32
    expected = torch.cat([gray.preprocess(item) for item in items])
    torch.testing.assert_close(pixels, expected, rtol=0, atol=0)
    assert gray.reconstruct(items, output_type="pt").images.shape == (6, 1, SIZE, SIZE)


def test_meta_and_sparse_tensors_are_refused(gray):
    refused(lambda: gray.reconstruct(torch.empty(1, 1, SIZE, SIZE, device="meta")), match="meta device")
    refused(lambda: gray.reconstruct([torch.rand(1, SIZE, SIZE), torch.empty(1, SIZE, SIZE, device="meta")]),
            match="meta device")
    refused(lambda: gray.reconstruct(torch.zeros(1, 1, SIZE, SIZE).to_sparse()), match="dense")
    vector = tiny_vector_pipeline()
    refused(lambda: vector.reconstruct(torch.empty(3, 2, device="meta"), output_type="pt"), match="meta")


# ---- every PIL mode ----------------------------------------------------------------------------------------------


def random_image(mode, seed=0):
    """An image of `mode` with random bytes (values of every kind: NaN in F, large ones in I, any alpha...)."""
    probe = PIL.Image.new(mode, (1, 1))
    per_pixel = len(probe.tobytes())
    return PIL.Image.frombytes(mode, (SIZE, SIZE), rng(seed).bytes(per_pixel * SIZE * SIZE))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", sorted(PIL.Image.MODES))
def test_every_pil_mode_gives_pixels_in_range_or_one_line(mode, channels, gray, rgb):
    """Whatever the bytes of an image of any mode, the result is a `1 x C x H x W` float32 tensor in [0, 1] or a
    one-line ValueError/TypeError, never torch's or PIL's own error."""
    pipe = gray if channels == 1 else rgb
    for seed in range(3):
        image = random_image(mode, seed)
        try:
            pixels = pipe.preprocess(image)
        except (ValueError, TypeError) as err:
            assert "\n" not in str(err) and "got" in str(err), str(err)
            continue
        assert pixels.shape == (1, channels, SIZE, SIZE) and pixels.dtype == torch.float32
        assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"])
def test_every_listed_pil_mode_has_a_conversion(mode, gray, rgb):
    """A plain (opaque, in range) image of each mode is accepted by 1- and 3-channel models."""
    bands = PIL.Image.new(mode, (1, 1)).getbands()
    opaque = tuple(255 if band in ("A", "a") else 0 for band in bands) if len(bands) > 1 else 0
    image = PIL.Image.new(mode, (SIZE, SIZE), opaque)
    for pipe, channels in ((gray, 1), (rgb, 3)):
        pixels = pipe.preprocess(image)
        assert pixels.shape == (1, channels, SIZE, SIZE)


def test_mode_1_and_l_are_exact(gray, rgb):
    bits = rng(7).random((SIZE, SIZE)) < 0.5
    image = PIL.Image.fromarray(bits)
    assert image.mode == "1"
    torch.testing.assert_close(gray.preprocess(image), as_pixels(bits.astype(np.float32)), rtol=0, atol=0)
    values = gray_u8(8)
    torch.testing.assert_close(gray.preprocess(PIL.Image.fromarray(values)), as_pixels(values / 255), rtol=0, atol=0)
    torch.testing.assert_close(rgb.preprocess(PIL.Image.fromarray(values)),
                               as_pixels(np.repeat(values[..., None], 3, -1) / 255), rtol=0, atol=0)


def test_rgb_is_exact_for_rgb_models_and_luma_for_gray_ones(gray, rgb):
    values = rgb_u8(9)
    image = PIL.Image.fromarray(values)
    torch.testing.assert_close(rgb.preprocess(image), as_pixels(values / 255), rtol=0, atol=0)
    luma = values.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, PIL's convert("L")
    torch.testing.assert_close(gray.preprocess(image), as_pixels(luma / 255), rtol=0, atol=1 / 255)


def test_palette_images_are_looked_up_exactly(gray, rgb):
    palette = rng(10).integers(0, 256, (256, 3), dtype=np.uint8)
    index = gray_u8(11)
    image = PIL.Image.fromarray(index).convert("P")
    image.putpalette(palette.flatten().tolist())
    image.frombytes(index.tobytes())
    assert image.mode == "P"
    looked_up = palette[index]
    torch.testing.assert_close(rgb.preprocess(image), as_pixels(looked_up / 255), rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(image), gray.preprocess(PIL.Image.fromarray(looked_up)), rtol=0, atol=0)
    # a palette entry marked transparent: refused where it is used, as for RGBA
    image.info["transparency"] = int(index[0, 0])
    refused(lambda: rgb.preprocess(image), match="alpha goes down to 0")


@pytest.mark.parametrize("mode", ["RGBA", "RGBa", "LA", "PA", "La"])
def test_alpha_is_dropped_only_where_opaque(mode, gray, rgb):
    """Opaque images equal their colour bands; any transparency is refused (no silent compositing)."""
    values = rgb_u8(12)
    gray_values = values[..., 0]
    opaque = np.full((SIZE, SIZE), 255, np.uint8)
    if mode in ("RGBA", "RGBa"):
        image = PIL.Image.fromarray(np.dstack([values, opaque]), "RGBA").convert(mode) if mode == "RGBa" else \
            PIL.Image.fromarray(np.dstack([values, opaque]), "RGBA")
        color = PIL.Image.fromarray(values)
    elif mode == "PA":
        image = PIL.Image.fromarray(np.dstack([gray_values, opaque]), "LA").convert("PA")
        color = image.convert("RGB")
    else:
        image = PIL.Image.fromarray(np.dstack([gray_values, opaque]), "LA")
        image = image.convert(mode) if mode == "La" else image
        color = PIL.Image.fromarray(gray_values)
    assert image.mode == mode
    for pipe in (gray, rgb):
        torch.testing.assert_close(pipe.preprocess(image), pipe.preprocess(color), rtol=0, atol=0)
    bands = list(image.split())
    bands[-1] = PIL.Image.fromarray(np.where(rng(13).random((SIZE, SIZE)) < 0.1, 17, 255).astype(np.uint8))
    see_through = PIL.Image.merge(mode, bands)
    for pipe in (gray, rgb):
        refused(lambda: pipe.preprocess(see_through), match=f"mode {mode} whose alpha goes down to")


def test_colour_modes_use_pils_transforms(rgb, gray):
    cases = [("CMYK", (0, 0, 0, 0), (1, 1, 1)), ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
             ("YCbCr", (200, 128, 128), (200 / 255,) * 3), ("HSV", (0, 255, 255), (1, 0, 0)),
             ("HSV", (85, 255, 255), (0, 1, 0)), ("HSV", (0, 0, 51), (0.2, 0.2, 0.2)),
             ("LAB", (0, 128, 128), (0, 0, 0)), ("LAB", (255, 128, 128), (1, 1, 1)),
             ("RGBX", (10, 20, 30, 0), (10 / 255, 20 / 255, 30 / 255))]
    for mode, colour, expected in cases:
        image = PIL.Image.new(mode, (SIZE, SIZE), colour)
        pixels = rgb.preprocess(image)
        torch.testing.assert_close(pixels[0, :, 0, 0], torch.tensor(expected, dtype=torch.float32), rtol=0,
                                   atol=1.5 / 255, msg=f"{mode} {colour}")
        assert gray.preprocess(image).shape == (1, 1, SIZE, SIZE)


def test_unsupported_pil_modes_and_channel_counts_are_refused():
    two = AsIntroVAEImageProcessor(channels=2, sample_size=SIZE)
    refused(lambda: two.preprocess(PIL.Image.new("F", (4, 4))), match="one-band F image")
    five = AsIntroVAEImageProcessor(channels=5, sample_size=SIZE)
    refused(lambda: five.preprocess(PIL.Image.new("RGB", (4, 4))), match="takes arrays or tensors")
    assert five.preprocess(np.zeros((4, 4, 5), np.float32)).shape == (1, 5, SIZE, SIZE)
    four = AsIntroVAEImageProcessor(channels=4, sample_size=SIZE)
    half = PIL.Image.new("RGBA", (4, 4), (10, 20, 30, 128))
    torch.testing.assert_close(four.preprocess(half, height=4, width=4)[0, :, 0, 0],
                               torch.tensor([10, 20, 30, 128]) / 255, rtol=0, atol=0)


def test_16_bit_and_8_bit_versions_of_one_picture_agree_after_resizing(gray):
    """High-depth PIL images are resized with the same PIL filter as 8-bit ones (as 32-bit floats)."""
    values = gray_u8(14, size=37)
    eight = gray.preprocess(PIL.Image.fromarray(values))
    sixteen = gray.preprocess(PIL.Image.fromarray(values.astype(np.uint16) * 257))
    floats = gray.preprocess(PIL.Image.fromarray(values.astype(np.float32) / 255))
    torch.testing.assert_close(sixteen, floats, rtol=0, atol=1e-6)
    torch.testing.assert_close(sixteen, eight, rtol=0, atol=1 / 255)  # PIL's 8-bit filter rounds to 8 bits


# ---- every NumPy dtype and rank, every tensor dtype ---------------------------------------------------------------


def test_integer_and_float_dtypes_follow_one_rule(gray):
    values = gray_u8(15)
    expected = as_pixels(values / 255)
    torch.testing.assert_close(gray.preprocess(values[..., None]), expected, rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(torch.from_numpy(values)[None]), expected, rtol=0, atol=0)
    wide = values.astype(np.uint16) * 257  # the same picture in 16 bits
    torch.testing.assert_close(gray.preprocess(wide[..., None]), expected, rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(torch.from_numpy(wide)[None]), expected, rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(wide.astype(">u2")[..., None]), expected, rtol=0, atol=0)
    bits = (values > 127)
    for dtype in ("int8", "int16", "int32", "int64", "uint32", "uint64"):  # read as they are: only 0 and 1 fit
        torch.testing.assert_close(gray.preprocess(bits.astype(dtype)[..., None]), as_pixels(bits), rtol=0, atol=0)
        refused(lambda: gray.preprocess(values.astype(dtype)[..., None]), match=f"{dtype} values must lie in [0, 1]")
    floats = values / 255
    for dtype in (np.float16, np.float32, np.float64):
        given = floats.astype(dtype)
        torch.testing.assert_close(gray.preprocess(given[..., None]), as_pixels(given.astype(np.float32)),
                                   rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(torch.from_numpy(floats).to(torch.bfloat16)[None]),
                               as_pixels(torch.from_numpy(floats).to(torch.bfloat16).float().numpy()), rtol=0, atol=0)


def test_float64_is_checked_before_rounding(gray):
    """1 + 1e-12 rounds to 1.0 in float32; the range check sees the value as given."""
    data = np.full((SIZE, SIZE, 1), 1 + 1e-12)
    refused(lambda: gray.preprocess(data), match="float64 values must lie in [0, 1]")


@pytest.mark.parametrize("dtype", ["bool", "complex64", "complex128", "object", "U1", "datetime64[s]", "longdouble"])
def test_other_numpy_dtypes_are_refused(gray, dtype):
    data = np.zeros((SIZE, SIZE, 1), dtype=dtype)
    refused(lambda: gray.preprocess(data), TypeError, match="got dtype")


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_other_tensor_dtypes_are_refused(gray):
    dtypes = [torch.bool, torch.complex64] + [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2")
                                               if hasattr(torch, n)]
    for dtype in dtypes:
        refused(lambda: gray.preprocess(torch.zeros(1, 1, SIZE, SIZE, dtype=dtype)), TypeError, match="got dtype")
    refused(lambda: gray.preprocess(torch.quantize_per_tensor(torch.zeros(1, 1, 4, 4), 0.1, 0, torch.quint8)),
            TypeError, match="got dtype quint8")


@pytest.mark.parametrize("shape", [(), (SIZE,), (1, 1, 1, SIZE, SIZE, 1), (2, 1, 1, SIZE, SIZE)])
def test_wrong_ranks_are_refused(gray, shape):
    refused(lambda: gray.preprocess(np.zeros(shape, np.float32)), match=f"got an array of shape {shape}")
    refused(lambda: gray.preprocess(torch.zeros(shape)), match=f"got a tensor of shape {shape}")


def test_views_byte_orders_and_read_only_arrays_read_the_same(gray):
    values = rng(16).random((SIZE, SIZE, 1))
    expected = as_pixels(values)
    flipped = values[::-1, ::-1]
    torch.testing.assert_close(gray.preprocess(flipped), as_pixels(np.ascontiguousarray(flipped)), rtol=0, atol=0)
    torch.testing.assert_close(gray.preprocess(values.astype(">f8")), expected, rtol=0, atol=0)
    frozen = values.copy()
    frozen.setflags(write=False)
    torch.testing.assert_close(gray.preprocess(frozen), expected, rtol=0, atol=0)
    strided = np.zeros((SIZE, 2 * SIZE, 1))
    strided[:, ::2] = values
    torch.testing.assert_close(gray.preprocess(strided[:, ::2]), expected, rtol=0, atol=0)
    transposed = torch.from_numpy(values).permute(2, 1, 0).transpose(1, 2)  # non-contiguous C x H x W
    torch.testing.assert_close(gray.preprocess(transposed), expected, rtol=0, atol=0)


def test_the_given_arrays_are_not_modified(gray):
    values = rng(17).random((SIZE, SIZE, 1)).astype(np.float32)
    copy = values.copy()
    tensor = torch.from_numpy(values.copy()).permute(2, 0, 1)
    tensor_copy = tensor.clone()
    gray.reconstruct([values, tensor], output_type="pt")
    np.testing.assert_array_equal(values, copy)
    torch.testing.assert_close(tensor, tensor_copy, rtol=0, atol=0)


def test_wrong_types_are_refused_with_their_names(gray):
    refused(lambda: gray.preprocess([PIL.Image.new("L", (4, 4)), "digit.png"]), TypeError,
            match="got str inside a list")
    refused(lambda: gray.preprocess([[np.zeros((4, 4, 1))]]), TypeError, match="got list inside a list")
    refused(lambda: gray.preprocess(()), match="empty tuple")
    refused(lambda: gray.preprocess(None), TypeError, match="got NoneType")


def test_channels_of_tensors_and_arrays_are_checked_for_rgb_models(rgb):
    refused(lambda: rgb.preprocess(np.zeros((SIZE, SIZE), np.float32)), match="got an array of shape (16, 16)")
    refused(lambda: rgb.preprocess(np.zeros((SIZE, SIZE, 4), np.float32)), match="(height, width, 3)")
    refused(lambda: rgb.preprocess(torch.zeros(1, 4, SIZE, SIZE)), match="got a tensor of shape (1, 4, 16, 16)")
    refused(lambda: rgb.preprocess(torch.zeros(SIZE, SIZE)), match="got a tensor of shape (16, 16)")


def test_vector_pipelines_keep_their_vector_checks():
    pipe = tiny_vector_pipeline()
    points = np.array([[0.5, -2.0], [3.0, 1.0]], np.float32)
    torch.testing.assert_close(pipe.preprocess(points), torch.from_numpy(points), rtol=0, atol=0)
    refused(lambda: pipe.preprocess(PIL.Image.new("L", (2, 1))), TypeError, match="got Image")
    refused(lambda: pipe.preprocess([np.zeros(2), np.zeros(3)]), match="vectors of shape (batch, 2)")
    refused(lambda: pipe.preprocess(np.array([[np.nan, 0.0]])), match="NaN or infinity")


def test_truncated_files_and_masked_arrays_are_refused(gray):
    buffer = io.BytesIO()
    PIL.Image.fromarray(gray_u8(18, size=64)).save(buffer, "PNG")
    truncated = PIL.Image.open(io.BytesIO(buffer.getvalue()[:200]))  # opens lazily: the header is intact
    refused(lambda: gray.preprocess(truncated), match="cannot be read (image file is truncated)")
    values = rng(19).random((SIZE, SIZE, 1))
    masked = np.ma.masked_array(values, mask=values > 0.9)
    refused(lambda: gray.preprocess(masked), match="masked array with")
    unmasked = np.ma.masked_array(values, mask=False)
    torch.testing.assert_close(gray.preprocess(unmasked), as_pixels(values), rtol=0, atol=0)


def test_latents_and_labels_that_hold_no_values_are_refused(gray):
    """Latents and class labels are inputs too: meta, sparse, integer and complex tensors get one line."""
    refused(lambda: gray(latents=torch.empty(2, 4, device="meta"), output_type="pt"), match="meta device")
    refused(lambda: gray.decode(torch.zeros(2, 4).to_sparse(), output_type="pt"), match="sparse_coo")
    refused(lambda: gray.decode(torch.zeros(2, 4, dtype=torch.int64), output_type="pt"), match="int64 tensor")
    refused(lambda: gray.decode(torch.zeros(2, 4, dtype=torch.complex64), output_type="pt"), match="complex64")
    torch.testing.assert_close(gray.decode(torch.zeros(2, 4, dtype=torch.float64), output_type="pt").images,
                               gray.decode(torch.zeros(2, 4), output_type="pt").images, rtol=0, atol=0)
    torch.manual_seed(0)
    kw = dict(sample_size=8, latent_dim=4, block_out_channels=(8, 16), num_class_embeds=3)
    pipe = AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, **kw).eval())
    refused(lambda: pipe(batch_size=2, class_labels=torch.empty(2, dtype=torch.long, device="meta")),
            match="meta device")


def test_the_pipeline_holds_one_processor_and_delegates_to_it(gray, rgb):
    from diffusers.image_processor import VaeImageProcessor

    for pipe, channels in ((gray, 1), (rgb, 3)):
        processor = pipe.image_processor
        assert isinstance(processor, AsIntroVAEImageProcessor) and isinstance(processor, VaeImageProcessor)
        assert processor.config.channels == channels and processor.config.sample_size == SIZE
        items = [PIL.Image.fromarray(rgb_u8(20, size=21)), rng(21).random((3, 9, 9, channels)).astype(np.float32)]
        torch.testing.assert_close(pipe.preprocess(items), processor.preprocess(items), rtol=0, atol=0)
    assert tiny_vector_pipeline().image_processor is None  # vector models keep their vector checks
