"""The checks of the latents and class labels given to [`AsIntroVAEPipeline`]: `check_latents`, `check_class_labels`.

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch and the standard library.
"""

from typing import Optional

import torch


def check_class_labels(class_labels, batch_size: int, device=None) -> Optional[torch.Tensor]:
    """`class_labels` (an int for the whole batch, a list or a tensor) as a tensor, checked by the models."""
    if class_labels is None:
        return None
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = [class_labels] * batch_size
    if torch.is_tensor(class_labels) and (class_labels.device.type == "meta" or class_labels.is_sparse):
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got a {class_labels.layout} "
                         f"tensor on the {class_labels.device.type} device.")
    labels = torch.as_tensor(class_labels, device=device)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got {class_labels!r}.")
    if len(labels) != batch_size:  # checked here: the networks see the labels of one chunk at a time
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got {len(labels)} labels.")
    return labels.long()


def check_latents(latents: torch.Tensor, latent_dim: int, device=None, dtype: Optional[torch.dtype] = None
                  ) -> torch.Tensor:
    """`B x latent_dim` latents, checked (dense, float, finite, not empty), on `device` as `dtype`."""
    if not torch.is_tensor(latents) or latents.ndim != 2 or latents.shape[1] != latent_dim:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"latents must have shape (batch, {latent_dim}), got {shape}.")
    if latents.shape[0] == 0:
        raise ValueError("latents: got an empty batch.")
    if latents.device.type == "meta" or latents.layout != torch.strided or not latents.is_floating_point():
        raise ValueError(f"latents: expected a dense float tensor holding values; got a {latents.layout} "
                         f"{str(latents.dtype).replace('torch.', '')} tensor on the {latents.device.type} device.")
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinity.")
    return latents.to(device=device, dtype=dtype)
