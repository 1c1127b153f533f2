"""Network factories built from diffusers classes, sized for a laptop CPU.

Each factory returns a stock diffusers model (so ``save_pretrained``/``from_pretrained`` and plain
diffusers pipelines work on it) configured small: a few million parameters, 8x8 latents or 8-32 px
pixels. Arguments are the few knobs recipes vary; everything else follows the reference
architectures (Ronneberger et al. 2015 U-Net with the Ho et al. 2020 / Rombach et al. 2022
residual + attention blocks; Kingma & Welling 2014 VAE with the LDM encoder/decoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import (
    AutoencoderKL,
    DiTTransformer2DModel,
    PixArtTransformer2DModel,
    UNet2DConditionModel,
    UNet2DModel,
)

# diffusers' transformers take (hidden_states, encoder_hidden_states, timestep) where its U-Nets
# take (sample, timestep, encoder_hidden_states): :func:`call_denoiser` hides the difference.
TIMESTEP_KEYWORD_MODELS = (PixArtTransformer2DModel, DiTTransformer2DModel)


def _check_divisible(size: int, levels: int, what: str) -> None:
    factor = 2 ** (levels - 1)
    if size % factor:
        raise ValueError(
            f"{what} size {size} is not divisible by {factor}, the total downsampling of "
            f"{levels} resolution levels; use a size that is a multiple of {factor} or fewer levels."
        )


def text_conditional_unet(
    sample_size: int = 8,
    in_channels: int = 4,
    block_out_channels: Sequence[int] = (64, 128),
    layers_per_block: int = 1,
    cross_attention_dim: int = 384,
    attention_head_dim: int = 8,
    norm_num_groups: int = 16,
) -> UNet2DConditionModel:
    """The latent denoiser of Stable Diffusion (Rombach et al. 2022, Sec. 3.3): a U-Net whose
    attention blocks cross-attend to the text encoder's per-token states; every level but the
    lowest-resolution one has cross-attention."""
    levels = len(block_out_channels)
    _check_divisible(sample_size, levels, "latent")
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def text_conditional_dit(
    sample_size: int = 8,
    in_channels: int = 4,
    num_layers: int = 6,
    num_attention_heads: int = 4,
    attention_head_dim: int = 32,
    patch_size: int = 1,
    caption_channels: int = 384,
) -> PixArtTransformer2DModel:
    """A diffusion transformer (DiT, Peebles & Xie 2023): the latent is cut into
    ``patch_size``-square patches, each a token; every block is self-attention, cross-attention to
    the text tokens and an MLP, with the timestep entering through adaptive layer norm shared
    across blocks ("adaLN-single", PixArt-alpha, Chen et al. 2023, Sec. 2.3). The text states
    (``caption_channels`` wide) are projected to the transformer width first."""
    if sample_size % patch_size:
        raise ValueError(
            f"latent size {sample_size} is not divisible by the DiT patch size {patch_size}; "
            "use a patch size that divides it (1 or 2 for 8x8 latents)."
        )
    width = num_attention_heads * attention_head_dim
    return PixArtTransformer2DModel(
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        in_channels=in_channels,
        out_channels=in_channels,
        num_layers=num_layers,
        cross_attention_dim=width,
        sample_size=sample_size,
        patch_size=patch_size,
        caption_channels=caption_channels,
        use_additional_conditions=False,
    )


def model_output(output) -> torch.Tensor:
    """The tensor of a model call: itself, or ``.sample`` of a diffusers output object."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "sample"):
        return output.sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot read a tensor out of a model output of type {type(output).__name__}.")


def call_denoiser(model, x: torch.Tensor, t: torch.Tensor, **conditions) -> torch.Tensor:
    """``model(x_t, t, **conditions)`` as a tensor, for diffusers U-Nets and transformers alike
    (the latter take the timestep by keyword) and for plain callables."""
    inner = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if isinstance(inner, TIMESTEP_KEYWORD_MODELS):
        output = model(x, timestep=t, **conditions)
    else:
        output = model(x, t, **conditions)
    return model_output(output)


def pixel_unet(
    sample_size: int = 16,
    in_channels: int = 1,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    num_class_embeds: int | None = None,
    attention: bool = True,
    norm_num_groups: int = 16,
) -> UNet2DModel:
    """A pixel-space DDPM U-Net (Ho et al. 2020, Appendix B) with self-attention at the lowest
    resolution; with ``num_class_embeds`` it is class-conditional, the class embedding added to
    the timestep embedding (Dhariwal & Nichol 2021). Class id ``num_class_embeds - 1`` can be
    reserved as the "null" class for classifier-free guidance."""
    levels = len(block_out_channels)
    _check_divisible(sample_size, levels, "image")
    down = ["DownBlock2D"] * (levels - 1) + (["AttnDownBlock2D"] if attention else ["DownBlock2D"])
    up = (["AttnUpBlock2D"] if attention else ["UpBlock2D"]) + ["UpBlock2D"] * (levels - 1)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        num_class_embeds=num_class_embeds,
        norm_num_groups=norm_num_groups,
    )


def small_vae(
    in_channels: int = 3,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 1,
    norm_num_groups: int = 16,
    sample_size: int = 32,
    scaling_factor: float = 1.0,
) -> AutoencoderKL:
    """The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, Sec. 3 and
    Appendix G): 3 levels downsample 32x32x3 to 8x8x4. ``scaling_factor`` is set after training
    to 1 / std of the latents (computed from data), as Stable Diffusion's 0.18215 was."""
    levels = len(block_out_channels)
    _check_divisible(sample_size, levels, "image")
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def parameter_count(model) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
