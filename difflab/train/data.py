"""Deterministic data order: a seeded permutation per epoch and a position inside it.

The Trainer does not let a DataLoader shuffle (its RNG state is not something we can save
without pickling) and does not let ``accelerator.prepare`` re-shard the loader (its batch
skipping on resume is by count, not by a saved position). Instead the order of epoch ``e`` is
``randperm(n)`` under a generator seeded with ``(seed, e)``, and the position is a pair
``(epoch, index)``: how many examples of that permutation the whole job has consumed. Each
global micro-batch takes ``batch_size * num_processes`` consecutive indices; process ``r`` gets
the ``r``-th slice (what accelerate calls ``split_batches``). An incomplete final global batch
is dropped, so every step sees full batches.

Exact resume with ``num_workers > 0`` additionally needs a dataset whose ``__getitem__`` is a
deterministic function of the index (augmentations seeded by index), because worker processes
are restarted at the resume point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

_EPOCH_SEED_STRIDE = 1_000_003  # keeps (seed, epoch) pairs apart for small seeds and epochs


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the examples in ``epoch``: ``randperm`` under a ``(seed, epoch)`` generator."""
    g = torch.Generator().manual_seed(seed * _EPOCH_SEED_STRIDE + epoch)
    return torch.randperm(num_examples, generator=g)


@dataclass
class DataPosition:
    """Where the job stands in its data stream: ``index`` examples of epoch ``epoch`` consumed."""

    epoch: int = 0
    index: int = 0


def epoch_batches(
    num_examples: int,
    batch_size: int,
    seed: int,
    position: DataPosition,
    rank: int = 0,
    world_size: int = 1,
) -> list[tuple[DataPosition, list[int]]]:
    """This process's remaining micro-batches of the epoch that ``position`` points into.

    Each item is ``(position_after_this_batch, indices)``. The position advances by the global
    batch ``batch_size * world_size``; a position with fewer than a global batch left in its
    epoch is first moved to the start of the next epoch.
    """
    global_batch = batch_size * world_size
    if num_examples < global_batch:
        raise ValueError(
            f"the dataset has {num_examples} examples, fewer than one global batch "
            f"(batch_size {batch_size} x {world_size} process(es) = {global_batch})."
        )
    epoch, index = position.epoch, position.index
    if index + global_batch > num_examples:
        epoch, index = epoch + 1, 0
    perm = epoch_permutation(num_examples, seed, epoch)
    batches = []
    while index + global_batch <= num_examples:
        start = index + rank * batch_size
        index += global_batch
        batches.append((DataPosition(epoch, index), perm[start : start + batch_size].tolist()))
    return batches


def collate_unless_batched(batch):
    """The Trainer's default collate function: a dataset whose ``__getitems__`` returns a
    finished batch (a mapping, e.g. :class:`~difflab.recipes.text_to_image.CachedLatents`) is
    passed through; a list of examples (``__getitem__`` per index, or a ``Subset``'s
    ``__getitems__``) is collated by torch's ``default_collate``."""
    return batch if isinstance(batch, Mapping) else default_collate(batch)


def data_stream(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    position: DataPosition,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[DataPosition, object]]:
    """Yield ``(position_after, batch)`` forever, starting at ``position``.

    One DataLoader per epoch (so workers start at the right example after a resume) with the
    epoch's batches as its ``batch_sampler`` and its own seeded generator, so creating it draws
    nothing from the global torch RNG (which the Trainer saves and restores).
    """
    n = len(dataset)
    collate_fn = collate_fn or collate_unless_batched
    while True:
        batches = epoch_batches(n, batch_size, seed, position, rank, world_size)
        epoch = batches[0][0].epoch
        loader = DataLoader(
            dataset,
            batch_sampler=[indices for _, indices in batches],
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed * _EPOCH_SEED_STRIDE + epoch),
        )
        for (position, _), batch in zip(batches, loader, strict=True):
            yield position, batch
