"""An exponential moving average of model weights.

Polyak averaging (Polyak & Juditsky 1992) in its exponential form: after every optimizer update
``shadow <- decay * shadow + (1 - decay) * param``. DDPM (Ho et al. 2020, App. B) samples from
an EMA with decay 0.9999; EDM (Karras et al. 2022) specifies it as a half-life in images. With
warm-up the decay of update k is ``min(decay, (1 + k) / (10 + k))`` (the ``num_updates`` rule of
TensorFlow's ExponentialMovingAverage, also diffusers' default), so a short run is not dominated
by the random initialisation.

Why not ``diffusers.training_utils.EMAModel``: it keeps the shadow weights as an unnamed list of
tensors (its ``state_dict`` mixes them with Python settings), so mapping them to named
safetensors keys for an exact, pickle-free resume needs as much code as this class; and sampling
from it means swapping weights in and out of the live model (``store``/``copy_to``/``restore``).
Here the shadow is an ordinary ``nn.Module`` copy: save it with safetensors, sample from it
directly, load it as a model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A shadow copy of ``model`` whose parameters track an exponential moving average.

    Only floating-point parameters that require gradients are averaged; buffers (e.g. norm
    statistics) and frozen parameters are copied as they are.

    Attributes:
        shadow: the averaged model (eval mode, no gradients) - sample from this.
        decay: the target decay in [0, 1).
        warmup: whether to use the ``(1 + k) / (10 + k)`` warm-up.
        num_updates: how many times :meth:`update` has run (saved with checkpoints).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        k = self.num_updates
        return min(self.decay, (1 + k) / (10 + k))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``: shadow = d * shadow + (1 - d) * param."""
        d = self.current_decay()
        params = dict(model.named_parameters())
        for name, shadow in self.shadow.named_parameters():
            p = params[name]
            if p.requires_grad and p.is_floating_point():
                shadow.lerp_(p.detach().to(shadow.dtype), 1.0 - d)  # = d*shadow + (1-d)*p
            else:
                shadow.copy_(p.detach())
        buffers = dict(model.named_buffers())
        for name, b in self.shadow.named_buffers():
            b.copy_(buffers[name].detach())
        self.num_updates += 1
