"""Checking stored weights against the network they are meant for, before loading them.

``nn.Module.load_state_dict`` reports a mismatch as one long RuntimeError, and only after a
network was built; loaders that take files from users (feature networks, Inception-v3, a
pipeline to start training from) want the differences as data, to say which file holds which
network and what setting to change.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def state_dict_differences(
    expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mis-shaped) tensor names of ``stored`` against ``expected``, each
    sorted; a mis-shaped entry reads ``"name (stored shape) (expected shape)"``."""
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    misshaped = [
        f"{k} {tuple(stored[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(expected.keys() & stored.keys())
        if stored[k].shape != expected[k].shape
    ]
    return missing, unexpected, misshaped
