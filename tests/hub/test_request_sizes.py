"""Request sizes (issue 20, item 2): a call whose latents and outputs would exceed `pipe.max_request_bytes` is
refused in one line before anything is allocated; accepted calls run the networks on `pipe.forward_batch_size`
samples at a time, with the same random draws as one pass (chunked outputs equal unchunked ones bit for bit).

The huge cases run in a child process whose address space is capped (`RLIMIT_AS`) a few hundred MiB above what it
uses after start-up: a regression fails the test with an allocation error instead of eating the machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEPipeline
from helpers import tiny_image_pipeline, tiny_vector_pipeline

TESTS = Path(__file__).resolve().parents[1]
HEADROOM_MB = 400  # the child's address space: what it maps after start-up, plus this

CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
import torch
from helpers import tiny_image_pipeline, tiny_vector_pipeline
torch.set_num_threads(1)
pipe, vector = tiny_image_pipeline(1), tiny_vector_pipeline()
x = torch.rand(1, 1, 16, 16)
pipe(batch_size=2, output_type="np"); pipe.interpolate(x, x, num_steps=2, output_type="np")  # warm up the allocator
mapped = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize")][0]
resource.setrlimit(resource.RLIMIT_AS, (mapped + {headroom} * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
results = {{}}
def attempt(name, call):
    try:
        out = call()
        results[name] = ["ok", str(getattr(out, "images", out).shape)]
    except BaseException as err:
        results[name] = [type(err).__name__, str(err)[:2000]]
attempt("limit works", lambda: torch.empty(2 * {headroom} * 2**20, dtype=torch.uint8).fill_(1))
{calls}
print(json.dumps(results))
"""


def run_child(calls: str) -> dict:
    script = CHILD.format(tests=str(TESTS), headroom=HEADROOM_MB, calls=calls)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("limit works")[0] != "ok", "precondition: the child's memory limit does not bite"
    return results


def assert_one_line_refusal(result, name, *words):
    kind, message = result
    assert kind == "ValueError", f"{name}: expected a one-line ValueError, got {kind}: {message[:500]}"
    assert "\n" not in message and "expected at most" in message and "got" in message, f"{name}: {message}"
    for word in words:
        assert word in message, f"{name}: {message}"


def test_huge_requests_are_refused_before_allocating():
    """batch_size=10**9 used to draw 16 GB of latents, 2**63 to fail with a C++ stack, num_steps=10**9 likewise."""
    results = run_child("""
attempt("batch_size=10**9", lambda: pipe(batch_size=10**9))
attempt("batch_size=2**63", lambda: pipe(batch_size=2**63, output_type="np"))
attempt("latents only", lambda: pipe(batch_size=10**9, output_type="latent"))
attempt("generator", lambda: pipe(batch_size=10**9, generator=torch.Generator().manual_seed(0), output_type="pt"))
attempt("num_steps=10**9", lambda: pipe.interpolate(x, x, num_steps=10**9, output_type="np"))
attempt("num_steps=2**63", lambda: pipe.interpolate(x, x, num_steps=2**63, output_type="latent"))
attempt("vector", lambda: vector(batch_size=10**10, output_type="np"))
""")
    assert set(results) == {"batch_size=10**9", "batch_size=2**63", "latents only", "generator", "num_steps=10**9",
                            "num_steps=2**63", "vector"}
    for name, result in results.items():
        what = "num_steps" if name.startswith("num_steps") else "batch_size"
        assert_one_line_refusal(result, name, what, "pipe.max_request_bytes")
    assert "got 9223372036854775808 samples" in results["batch_size=2**63"][1]


def test_large_accepted_requests_run_in_bounded_memory():
    """20000 samples decoded in one pass need ~0.8 GB of activations, more than the child may map; in chunks of
    `forward_batch_size` they fit. The unchunked run must fail in the same child, else the test proves nothing."""
    results = run_child("""
attempt("chunked", lambda: pipe(batch_size=20000, generator=torch.Generator().manual_seed(0), output_type="np"))
attempt("interpolate", lambda: pipe.interpolate(x, x, num_steps=20000, output_type="pt"))
attempt("reconstruct", lambda: pipe.reconstruct(torch.rand(20000, 1, 16, 16), output_type="np"))
pipe.forward_batch_size = 10**9
attempt("one pass", lambda: pipe(batch_size=20000, generator=torch.Generator().manual_seed(0), output_type="np"))
""")
    assert results["chunked"] == ["ok", "(20000, 16, 16, 1)"], results["chunked"]
    assert results["interpolate"] == ["ok", "torch.Size([20000, 1, 16, 16])"], results["interpolate"]
    assert results["reconstruct"] == ["ok", "(20000, 16, 16, 1)"], results["reconstruct"]
    assert results["one pass"][0] != "ok", "precondition: one pass over 20000 samples should not fit in the child"


# ---- chunked calls equal unchunked ones --------------------------------------------------------------------------


def conditional_pipeline():
    torch.manual_seed(0)
    kw = dict(sample_size=8, latent_dim=4, block_out_channels=(8, 16), num_class_embeds=3)
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, **kw).eval())


def outputs(pipe, chunk):
    """Every operation's outputs with `forward_batch_size = chunk`."""
    pipe.forward_batch_size = chunk
    g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731
    size = pipe.encoder.config.sample_size
    x = torch.rand(11, 1, size, size, generator=g(1))
    labels = {} if pipe.num_classes is None else {"class_labels": [i % 3 for i in range(11)]}
    one_label = {} if pipe.num_classes is None else {"class_labels": 2}
    out = {
        "sample": pipe(batch_size=11, generator=g(), output_type="pt", **labels).images,
        "sample per-sample generators": pipe(batch_size=11, generator=[g(i) for i in range(11)], output_type="np",
                                             **labels).images,
        "sample pil": np.stack([np.asarray(i) for i in pipe(batch_size=11, generator=g(), **labels).images]),
        "latents": pipe(batch_size=11, generator=g(), output_type="latent", **labels).images,
        "decode": pipe.decode(torch.randn(11, 4, generator=g(2)), output_type="pt", **labels).images,
        "encode mean": pipe.encode(x, **labels).latent_dist.mean,
        "encode logvar": pipe.encode(x, **labels).latent_dist.logvar,
        "reconstruct": pipe.reconstruct(x, output_type="pt", **labels).images,
        "reconstruct sampled": pipe.reconstruct(x, generator=g(3), sample_posterior=True, output_type="np",
                                                **labels).images,
        "interpolate": pipe.interpolate(x[:1], x[1:2], num_steps=11, output_type="pt", **one_label).images,
    }
    return {k: torch.as_tensor(v) for k, v in out.items()}


def by_hand(pipe, chunk):
    """The same operations written out: the draws of one pass (one `randn` of the whole batch, or one per sample
    with a list of generators), then the networks run on the chunks of `chunk` samples."""
    g = lambda seed=0: torch.Generator().manual_seed(seed)  # noqa: E731
    size = pipe.encoder.config.sample_size
    x = torch.rand(11, 1, size, size, generator=g(1))
    y = None if pipe.num_classes is None else torch.tensor([i % 3 for i in range(11)])
    parts = [slice(i, i + chunk) for i in range(0, 11, chunk)]

    def decode(z, labels=y):
        with torch.no_grad():
            return torch.cat([(pipe.decoder(z[c]) if labels is None else pipe.decoder(z[c], labels[c])).clamp(0, 1)
                              for c in parts])

    def encode(images):
        with torch.no_grad():
            pairs = [pipe.encoder(images[c]) if y is None else pipe.encoder(images[c], y[c]) for c in parts]
        return torch.cat([mu for mu, _ in pairs]), torch.cat([logvar for _, logvar in pairs])

    mean, logvar = encode(x)
    logvar = logvar.clamp(-30.0, 20.0)  # as diffusers' DiagonalGaussianDistribution
    eps = torch.randn(11, 4, generator=g(3))
    one = None if y is None else torch.full((1,), 2)
    with torch.no_grad():
        ends = [pipe.encoder(e) if one is None else pipe.encoder(e, one) for e in (x[:1], x[1:2])]
    w = torch.linspace(0, 1, 11)[:, None]
    path = (1 - w) * ends[0][0] + w * ends[1][0]
    return {
        "sample": decode(torch.randn(11, 4, generator=g())),
        "sample per-sample generators": decode(torch.cat([torch.randn(1, 4, generator=g(i)) for i in range(11)])),
        "latents": torch.randn(11, 4, generator=g()),
        "decode": decode(torch.randn(11, 4, generator=g(2))),
        "encode mean": mean,
        "reconstruct": decode(mean),
        "reconstruct sampled": decode(mean + torch.exp(0.5 * logvar) * eps),
        "interpolate": decode(path, None if y is None else torch.full((11,), 2)),
    }


@pytest.mark.parametrize("make", [tiny_image_pipeline, conditional_pipeline])
def test_chunked_calls_draw_as_one_pass_bit_for_bit(make):
    """
    A call in chunks of 1, 3 or 4 gives, bit for bit, what its networks give on those chunks with the draws of one
    pass; the latents themselves are bit-equal whatever the chunks. Against one pass over all 11 samples the images
    agree to float32 rounding only: CPU kernels round differently for different batch sizes (as between a sample
    drawn alone and in a batch; see `test_each_sample_is_independent_of_the_rest_of_the_batch`).
    """
    pipe = make()
    one_pass = outputs(pipe, 10**6)
    for chunk in (1, 3, 4):
        chunked, expected = outputs(pipe, chunk), by_hand(pipe, chunk)
        for name, value in expected.items():
            got = chunked[name]
            got = got.permute(0, 3, 1, 2) if got.ndim == 4 and got.shape[-1] == 1 else got  # np: B x H x W x C
            assert torch.equal(got, value), f"{name}, chunks of {chunk}: not the networks' output on the chunks"
        assert torch.equal(chunked["latents"], one_pass["latents"])
        for name, value in one_pass.items():
            tolerance = 1 if name == "sample pil" else 1e-6  # uint8 images: one step of rounding at most
            torch.testing.assert_close(chunked[name].float(), value.float(), rtol=0, atol=tolerance,
                                       msg=lambda m: f"{name}, chunks of {chunk}: {m}")


def test_vector_pipelines_are_chunked_too():
    pipe = tiny_vector_pipeline()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pipe.forward_batch_size = 10**6
    a = pipe(batch_size=9, generator=g(), output_type="pt").images
    points = np.asarray(a)
    r = pipe.reconstruct(points, output_type="np").images
    pipe.forward_batch_size = 2
    latents = pipe(batch_size=9, generator=g(), output_type="latent").images
    assert torch.equal(latents, torch.randn(9, 2, generator=g()))  # the draws of one pass
    with torch.no_grad():  # bit for bit: the networks on chunks of 2
        expected = torch.cat([pipe.decoder(latents[i : i + 2]) for i in range(0, 9, 2)])
    assert torch.equal(pipe(batch_size=9, generator=g(), output_type="pt").images, expected)
    torch.testing.assert_close(pipe(batch_size=9, generator=g(), output_type="pt").images, a, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pipe.reconstruct(points, output_type="np").images, r, rtol=0, atol=1e-6)


# ---- the limit -----------------------------------------------------------------------------------------------------


def test_the_limit_is_exact_and_stated():
    """`N x (latent_dim + values) x 4` bytes: 16 x 16 gray images, 4 latents: 1040 bytes a sample."""
    pipe = tiny_image_pipeline(1)
    pipe.max_request_bytes = 1040 * 5
    assert len(pipe(batch_size=5, output_type="np").images) == 5
    with pytest.raises(ValueError) as info:
        pipe(batch_size=6, output_type="np")
    message = str(info.value)
    assert message == ("batch_size: expected at most 5 samples per call here (their latents and outputs, 1040 bytes "
                       "each with output_type='np', may take pipe.max_request_bytes = 4.843e-06 GiB); got 6 samples "
                       "(5.811e-06 GiB): split the request into several calls."), message
    assert len(pipe(batch_size=325, output_type="latent").images) == 325  # 16 bytes a sample: 5200 / 16
    with pytest.raises(ValueError, match="batch_size: expected at most 325 samples"):
        pipe(batch_size=326, output_type="latent")
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="num_steps: expected at most 5 samples"):
        pipe.interpolate(x, x, num_steps=6, output_type="np")
    with pytest.raises(ValueError, match="latents: expected at most 5 samples"):
        pipe.decode(torch.randn(6, 4), output_type="np")
    with pytest.raises(ValueError, match="images: expected at most 5 samples"):
        pipe.reconstruct(torch.rand(6, 1, 16, 16), output_type="pil")
    with pytest.raises(ValueError, match="latents: expected at most 5 samples"):
        pipe(latents=torch.randn(6, 4), output_type="pt")


def test_the_default_limit_allows_ordinary_requests():
    pipe = tiny_image_pipeline(3, size=64, block_out_channels=(8, 16))
    assert pipe.max_request_bytes == 4 * 2**30 and pipe.forward_batch_size == 256
    per_sample = 4 * (4 + 3 * 64 * 64)
    assert pipe.max_request_bytes // per_sample >= 80000  # e.g. FID's 50000 samples of 64 x 64 RGB in one call
    with pytest.raises(ValueError, match=r"expected at most 87352 samples"):  # 49168 bytes a sample
        pipe(batch_size=87353, output_type="pt")


def test_class_labels_of_the_wrong_length_are_refused_whatever_the_chunks():
    pipe = conditional_pipeline()
    pipe.forward_batch_size = 2
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="class_labels must be an int or 4 integers; got 5 labels"):
        pipe.reconstruct(x, class_labels=[0, 1, 2, 0, 1], output_type="pt")
    with pytest.raises(ValueError, match="class_labels must be an int or 4 integers; got 3 labels"):
        pipe.decode(torch.randn(4, 4), class_labels=[0, 1, 2], output_type="pt")


def test_score_bounds_what_grows_with_num_samples():
    pipe = tiny_image_pipeline(1)
    pipe.max_request_bytes = 8 * 10 * 4  # 10 posterior samples for batches of 4 images
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert pipe.score(x, num_samples=10, batch_size=4).neg_elbo.shape == (6,)
    with pytest.raises(ValueError) as info:
        pipe.score(x, num_samples=11, batch_size=4)
    message = str(info.value)
    assert "\n" not in message and message.startswith("num_samples: expected at most 10 posterior samples per image "
                                                      "with batches of 4 images") and "got 11" in message, message
    assert pipe.score(x, num_samples=20, batch_size=2).neg_elbo.shape == (6,)
