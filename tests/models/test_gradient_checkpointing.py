"""Gradient checkpointing the diffusers way: `enable_gradient_checkpointing()` on the conv models recomputes each
down or up block in the backward pass, keeps fewer activations, and trains to exactly the same weights."""

import pytest
import torch
import torch.utils.checkpoint

from asintrovae_hf import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEVectorEncoder,
    IntrospectiveObjective,
    ObjectiveConfig,
    train_step,
)
from asintrovae_hf.training.loop import train
from asintrovae_hf.training.args import parse_args
from helpers import TINY, pipeline_weights, reset_accelerate, tiny_image_pipeline


def _train(checkpointing_function=None, enable=False, class_conditional=False, steps=3):
    """Three float64 training steps of the tiny conv models; their state and last loss terms."""
    torch.manual_seed(0)
    kw = dict(sample_size=16, latent_dim=4, block_out_channels=(8, 16), num_class_embeds=3 if class_conditional
              else None)
    encoder = AsIntroVAEEncoder(in_channels=1, **kw).to(torch.float64).train()
    decoder = AsIntroVAEDecoder(out_channels=1, **kw).to(torch.float64).train()
    if enable:
        for model in (encoder, decoder):
            model.enable_gradient_checkpointing(checkpointing_function)
    opt_e = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1]) if class_conditional else None
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        terms = train_step(IntrospectiveObjective(ObjectiveConfig(beta_neg=8.0)), encoder, decoder, opt_e, opt_d, x, 4,
                           c=0.3, generator=generator, labels=labels)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return state, {k: float(v) for k, v in terms.items()}


def test_conv_models_support_it_and_vector_models_say_they_do_not():
    for model in tiny_image_pipeline().components.values():
        assert model._supports_gradient_checkpointing and not model.gradient_checkpointing
        model.enable_gradient_checkpointing()
        assert model.gradient_checkpointing
        model.disable_gradient_checkpointing()
        assert not model.gradient_checkpointing
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        AsIntroVAEVectorEncoder().enable_gradient_checkpointing()


@pytest.mark.parametrize("class_conditional", [False, True])
def test_training_with_checkpointing_gives_exactly_the_same_model(class_conditional):
    plain = _train(class_conditional=class_conditional)
    calls = []

    def counting(module, *inputs):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *inputs, use_reentrant=False)

    checkpointed = _train(enable=True, class_conditional=class_conditional)
    assert plain[1] == checkpointed[1]
    for key, value in plain[0].items():
        assert torch.equal(value, checkpointed[0][key]), key
    # the blocks really go through the checkpoint function: diffusers' plain one (`torch.utils.checkpoint`) runs
    # BatchNorm a second time in the backward pass, so its running statistics drift; the default here keeps them
    drifted = _train(checkpointing_function=counting, enable=True, class_conditional=class_conditional)
    assert calls and set(calls) == {"DownEncoderBlock", "UpDecoderBlock"}
    assert any(not torch.equal(value, drifted[0][key]) for key, value in plain[0].items() if "running_" in key)


def _saved_activation_bytes(enable: bool) -> int:
    """Bytes autograd keeps for the backward pass of the encoder and decoder of a 64 x 64 model."""
    kw = dict(sample_size=64, latent_dim=16, block_out_channels=(16, 32, 64))
    encoder, decoder = AsIntroVAEEncoder(in_channels=3, **kw), AsIntroVAEDecoder(out_channels=3, **kw)
    if enable:
        encoder.enable_gradient_checkpointing(), decoder.enable_gradient_checkpointing()
    kept = []

    def pack(tensor):
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        mu, _ = encoder(torch.rand(8, 3, 64, 64))
        decoder(mu).sum().backward()
    return sum(kept)


def test_checkpointing_keeps_fewer_activations():
    plain, checkpointed = _saved_activation_bytes(False), _saved_activation_bytes(True)
    assert checkpointed < 0.5 * plain, (plain, checkpointed)


def test_no_checkpointing_without_gradients():
    """Sampling (no autograd) runs the blocks directly, not through the checkpoint function."""
    pipe = tiny_image_pipeline()
    calls = []
    pipe.decoder.enable_gradient_checkpointing(lambda module, *inputs: calls.append(1) or module(*inputs))
    pipe(batch_size=2)
    assert calls == []


def test_training_script_flag_gives_the_same_weights(tmp_path):
    common = TINY + ["--max_train_steps", "3", "--checkpointing_steps", "100", "--save_images_steps", "100",
                     "--no-use_ema"]
    reset_accelerate()
    try:
        train(parse_args(common + ["--output_dir", str(tmp_path / "plain")]))
        reset_accelerate()
        train(parse_args(common + ["--output_dir", str(tmp_path / "checkpointed"), "--gradient_checkpointing"]))
    finally:
        reset_accelerate()
    plain, checkpointed = pipeline_weights(tmp_path / "plain"), pipeline_weights(tmp_path / "checkpointed")
    assert plain.keys() == checkpointed.keys()
    for key in plain:  # float32 and the fused upsampling: the same values to rounding
        torch.testing.assert_close(plain[key], checkpointed[key], rtol=1e-4, atol=1e-5, msg=key)
