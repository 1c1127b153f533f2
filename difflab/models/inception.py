"""The standard FID feature network, Inception-v3 as frozen in the 2015-12-05 TensorFlow graph
that Heusel et al. 2017 (arXiv:1706.08500) used, from a **local safetensors file**.

difflab ships no ImageNet weights and downloads nothing, and it never unpickles a file it is
given, so the usual routes (torchmetrics' ``feature=2048``, which needs torch-fidelity and hence
torchvision, and loads a pickled ``.pth``) are closed here. This module builds the network
itself and reads weights only from safetensors. The architecture is Szegedy et al. 2016
(arXiv:1512.00567, Fig. 5-7 and Table 1) with the two quirks of the TensorFlow FID graph that
every FID implementation reproduces: the average pools inside the Inception blocks do not count
padding, and the last block (``Mixed_7c``) pools its fourth branch with a *max* pool. Parameter
names follow the torchvision / pytorch-fid layout (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch_pool.bn.running_mean``, ..., ``fc.weight`` of shape [1008, 2048]), so the
state dict of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, saved once as safetensors
on a machine that has it (``safetensors.torch.save_file(state_dict, "inception.safetensors")``),
loads unchanged.

Written here rather than taken from a library because the libraries that have it need
torchvision (not installable on difflab's reference machine) or a pickled checkpoint.

Features: images in [-1, 1] (difflab's convention; grey images are repeated to RGB) are resized
to 299 x 299 with bilinear interpolation (``align_corners=False``, no antialiasing: close to, not
bit-identical with, TensorFlow 1's resize), run through the network, and the 2048-d global
average pool before the classifier ("pool3") is the feature vector.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from difflab.models.weights import state_dict_differences

__all__ = ["INPUT_SIZE", "InceptionV3Features", "is_inception_weights", "load_inception_v3"]

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes plus 8 unused


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as the TF graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # The TF graph's in-block average pools ignore the zero padding at the border.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (Szegedy et al. Fig. 5, the 5x5 branch kept as in the released graph)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class ReductionA(nn.Module):
    """35x35 -> 17x17 grid reduction (Szegedy et al. Fig. 10)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Szegedy et al. Fig. 6, n = 7)."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) pairs
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, width, 1)
        self.branch7x7_2 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7_3 = ConvBN(width, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = ConvBN(cin, width, 1)
        self.branch7x7dbl_2 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_3 = ConvBN(width, width, row[0], padding=row[1])
        self.branch7x7dbl_4 = ConvBN(width, width, col[0], padding=col[1])
        self.branch7x7dbl_5 = ConvBN(width, 192, row[0], padding=row[1])
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = x
        for index in range(1, 6):
            double = getattr(self, f"branch7x7dbl_{index}")(double)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class ReductionB(nn.Module):
    """17x17 -> 8x8 grid reduction."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_1(x)
        for index in range(2, 5):
            seven = getattr(self, f"branch7x7x3_{index}")(seven)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1
        )


class BlockE(nn.Module):
    """8x8 block with expanded filter banks (Szegedy et al. Fig. 7); ``max_pool`` selects the
    TF FID graph's max-pooled fourth branch of its last block."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(three),
                self.branch3x3_2b(three),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class InceptionV3Features(nn.Module):
    """The FID Inception-v3; calling it maps images ``[B, 1|3, H, W]`` in [-1, 1] to pool3
    features ``[B, 2048]`` (see the module docstring). ``config`` carries what difflab's metric
    code reads of a feature network (name, embedding_dim, in_channels, image_size)."""

    def __init__(self, name: str = "inception-v3") -> None:
        super().__init__()
        self.config = SimpleNamespace(
            name=name, embedding_dim=FEATURE_DIM, in_channels=3, image_size=INPUT_SIZE
        )
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = ReductionA(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = ReductionB(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # kept so the released state dict loads

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of the last block, ``[B, 2048]``, of 299 x 299 RGB in [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{block}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"Inception-v3 takes images [B, 1 or 3, H, W] in [-1, 1], got {tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(
                images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
        return self.pool3(images)


def is_inception_weights(spec: str | Path) -> bool:
    """Whether a ``--features`` value names an Inception weights file (``*.safetensors``)."""
    return str(spec).endswith(".safetensors")


def load_inception_v3(path: str | Path) -> InceptionV3Features:
    """The FID Inception-v3 with the weights of a local safetensors file, float32, eval mode,
    gradients off. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming
    the missing, unexpected or mis-shaped tensors when the file holds another network."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights {path} not found; difflab downloads nothing: save the state dict "
            "of pytorch-fid's pt_inception-2015-12-05-6726825d.pth as safetensors on a machine "
            "that has it (safetensors.torch.save_file(state_dict, 'inception.safetensors')) "
            "and pass that file"
        )
    net = InceptionV3Features(name=f"inception-v3 ({path.name})")
    expected = net.state_dict()
    tensors = load_file(str(path))
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected, wrong = state_dict_differences(expected, tensors)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not the FID Inception-v3 (torchvision / pytorch-fid parameter names): "
            f"{len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]}; {len(wrong)} of the wrong shape, e.g. {wrong[:3]}"
        )
    net.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    return net.eval().requires_grad_(False)
