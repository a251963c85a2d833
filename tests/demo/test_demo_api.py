"""The served demo as an API (gradio_client): `scripts/demo.py` in a subprocess answers what the pipeline computes."""

import numpy as np
import PIL.Image
import pytest
import torch

from asintrovae_hf.evaluation.ood import digits_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clients(demo_servers):
    from gradio_client import Client

    return {name: Client(server.url, verbose=False, download_files=True) for name, server in demo_servers.items()}


def png(tmp_path, index=3, name="digit.png"):
    path = tmp_path / name
    digits_images()[index].save(path)
    return str(path)


def read(path) -> np.ndarray:
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"  # served as PNG, not WebP
    return np.asarray(PIL.Image.open(path))


def test_api_lists_the_tabs(clients):
    for client in clients.values():
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/sample", "/reconstruct", "/interpolate", "/score", "/explore"} <= names


def test_api_sample_and_reconstruct_equal_the_pipeline(clients, demo_pipes, tmp_path):
    from gradio_client import handle_file

    client, pipe = clients["unconditional"], demo_pipes["unconditional"]
    gallery = client.predict(7, 2, 1.0, 0, api_name="/sample")
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(7)).images
    assert len(gallery) == 2
    for item, image in zip(gallery, expected):
        np.testing.assert_array_equal(read(item["image"]), np.asarray(image))

    path = png(tmp_path)
    seen, rec, error, mse = client.predict(handle_file(path), None, 0, api_name="/reconstruct")
    np.testing.assert_array_equal(read(rec), np.asarray(pipe.reconstruct(PIL.Image.open(path)).images[0]))
    x = pipe.preprocess(PIL.Image.open(path))
    x_hat = pipe.reconstruct(PIL.Image.open(path), output_type="pt").images
    assert mse == pytest.approx(float((x - x_hat).pow(2).mean()), abs=1e-6)  # shown to 6 decimals
    size = pipe.decoder.config.sample_size
    assert read(seen).shape == read(error).shape == read(rec).shape == (size, size)


def test_api_class_conditional(clients, demo_pipes):
    client, pipe = clients["conditional"], demo_pipes["conditional"]
    gallery = client.predict(7, 1, 1.0, 2, api_name="/sample")
    expected = pipe(generator=torch.Generator().manual_seed(7), class_labels=2).images[0]
    np.testing.assert_array_equal(read(gallery[0]["image"]), np.asarray(expected))
    strip = client.predict(None, None, 0, 1, 4, 1, api_name="/interpolate")
    ends = [pipe(generator=torch.Generator().manual_seed(s), class_labels=1).images[0] for s in (0, 1)]
    frames = pipe.interpolate(ends[0], ends[1], num_steps=4, class_labels=1).images
    np.testing.assert_array_equal(read(strip), np.concatenate([np.asarray(f) for f in frames], axis=1))
    decoded = client.predict(1, 1.5, 0.0, 0.0, 0.0, api_name="/explore")
    assert read(decoded).shape == (8, 8)


def test_api_score_with_reference_and_errors(clients, demo_pipes, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client = clients["unconditional"]
    text = client.predict(handle_file(png(tmp_path, 5)), 0, api_name="/score")
    assert "negative ELBO" in text and "bits per dimension" in text
    assert "percentile among 200 training images (the first 200 built-in digits)" in text
    text = clients["conditional"].predict(handle_file(png(tmp_path, 5)), 0, api_name="/score")
    assert "No reference scores" in text
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    with pytest.raises(AppError, match="Cannot read broken.png as an image: cannot identify image file") as info:
        client.predict(handle_file(str(broken)), None, 0, api_name="/reconstruct")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    with pytest.raises(AppError, match="^Value 0 is less than minimum value 1.$"):  # Gradio checks the slider's range
        client.predict(7, 0, 1.0, 0, api_name="/sample")
