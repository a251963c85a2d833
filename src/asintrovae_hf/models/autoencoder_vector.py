"""The MLP encoder and decoder of vectors (the 2D toy data, tabular data), with the API of the image models.

Bundled, last, into the models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .blocks import _apply_output_activation, _check_output_activation
from .loading import CheckedLoading, check_config, check_model_size


def mlp_size(in_features: int, hidden_dims: Sequence[int], out_features: int) -> Tuple[int, int]:
    """`(parameters, widest layer)` of the MLP of a vector model."""
    dims = [in_features, *hidden_dims, out_features]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:])), max(dims)



def _mlp(in_features: int, hidden_dims: Sequence[int], out_features: int) -> nn.Sequential:
    layers = []
    for width in hidden_dims:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class AsIntroVAEVectorEncoder(CheckedLoading, ModelMixin, ConfigMixin):
    r"""
    MLP encoder for vectors (2D toy data, tabular data), with the API of [`AsIntroVAEEncoder`].

    Parameters:
        in_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
    """

    @register_to_config
    def __init__(self, in_features: int = 2, latent_dim: int = 2, hidden_dims: Tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        check_config(type(self).__name__, in_features=in_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        check_model_size(type(self).__name__, hidden_dims, lambda: mlp_size(in_features, hidden_dims, 2 * latent_dim))
        self.net = _mlp(in_features, hidden_dims, 2 * latent_dim)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.config.in_features:
            raise ValueError(
                f"{type(self).__name__} expects vectors of shape (batch, {self.config.in_features}), "
                f"got a tensor of shape {tuple(x.shape)}."
            )

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Union[AutoencoderKLOutput, Tuple]:
        """Encode `(batch, in_features)` vectors into a posterior distribution over `(batch, latent_dim)`."""
        self._check_input(x)
        posterior = DiagonalGaussianDistribution(self.net(x))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return `(mu, logvar)`, each `B x Z`."""
        self._check_input(x)
        return self.net(x).chunk(2, dim=1)


class AsIntroVAEVectorDecoder(CheckedLoading, ModelMixin, ConfigMixin):
    r"""
    MLP decoder for vectors, with the API of [`AsIntroVAEDecoder`].

    Parameters:
        out_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
        output_activation (`str`, *optional*): `None`, `"sigmoid"` or `"tanh"`.
    """

    @register_to_config
    def __init__(
        self,
        out_features: int = 2,
        latent_dim: int = 2,
        hidden_dims: Tuple[int, ...] = (256, 256, 256),
        output_activation: Optional[str] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, out_features=out_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        _check_output_activation(output_activation)
        check_model_size(type(self).__name__, hidden_dims, lambda: mlp_size(latent_dim, hidden_dims, out_features))
        self.net = _mlp(latent_dim, hidden_dims, out_features)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Union[DecoderOutput, Tuple]:
        """Decode `(batch, latent_dim)` latents into `(batch, out_features)` vectors."""
        sample = self(z)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (batch, {self.config.latent_dim}), "
                f"got a tensor of shape {tuple(z.shape)}."
            )
        return _apply_output_activation(self.net(z), self.config.output_activation)
