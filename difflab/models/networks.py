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
    PriorTransformer,
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
    attention_levels: Sequence[bool] | None = None,
    out_channels: int | None = None,
    class_embed_type: str | None = None,
    image_embedding_dim: int | None = None,
) -> UNet2DConditionModel:
    """The latent denoiser of Stable Diffusion (Rombach et al. 2022, Sec. 3.3): a U-Net whose
    attention blocks cross-attend to the text encoder's per-token states. ``attention_levels``
    says which resolution levels (full resolution first) have them; by default every level but
    the lowest-resolution one, as in Stable Diffusion (the middle block always has one). A
    pixel-space model leaves them off its full-resolution level, where attention over every
    pixel would dominate the cost.

    Variants, all stock diffusers options:

    - a super-resolution model takes the upsampled low-resolution image as extra input channels
      (``in_channels`` = its own + the conditioning's, ``out_channels`` its own; Saharia et al.
      2022, Sec. 2.5) and its noise-augmentation level through ``class_embed_type="timestep"``
      (sinusoidal features of ``class_labels`` added to the timestep embedding, as Ho et al.
      2022's cascaded models condition on the augmentation level);
    - an unCLIP decoder (``image_embedding_dim``) conditions on a CLIP image embedding instead of
      text, projected to 32 context tokens for cross-attention and added to the timestep
      embedding (Ramesh et al. 2022, Sec. 2.1; diffusers' Kandinsky 2.2 layout:
      ``encoder_hid_dim_type="image_proj"``, ``addition_embed_type="image"``); call it with
      ``encoder_hidden_states=None, added_cond_kwargs={"image_embeds": e}``."""
    levels = len(block_out_channels)
    _check_divisible(sample_size, levels, "latent")
    if attention_levels is None:
        attention_levels = [True] * (levels - 1) + [False]
    if len(attention_levels) != levels:
        raise ValueError(
            f"attention_levels has {len(attention_levels)} entries for {levels} levels "
            f"(block_out_channels={tuple(block_out_channels)}); give one true/false per level."
        )
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)]
    image = {}
    if image_embedding_dim is not None:
        image = dict(encoder_hid_dim=image_embedding_dim, encoder_hid_dim_type="image_proj",
                     addition_embed_type="image")  # fmt: skip
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        class_embed_type=class_embed_type,
        **image,
    )


def embedding_prior(
    embedding_dim: int = 128,
    num_layers: int = 4,
    num_attention_heads: int = 4,
    attention_head_dim: int = 32,
) -> PriorTransformer:
    """The diffusion prior of unCLIP (DALL-E 2, Ramesh et al. 2022, Sec. 2.1): a transformer
    over four tokens - the CLIP text embedding, the timestep embedding, the noised CLIP image
    embedding and a learned output token - whose output token's projection predicts the clean
    image embedding directly (x0-prediction, "sample" in difflab's schedules). diffusers'
    ``PriorTransformer`` (Karlo/Kandinsky's prior) without text-token inputs. Its
    ``clip_mean``/``clip_std`` hold the per-dimension statistics the embeddings are standardised
    with (``post_process_latents`` undoes it); they start at 0 and 1 and are set from data."""
    prior = PriorTransformer(
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        num_layers=num_layers,
        embedding_dim=embedding_dim,
        num_embeddings=0,
        additional_embeddings=4,
        encoder_hid_proj_type=None,
        added_emb_type="prd",
        clip_embed_dim=embedding_dim,
    )
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    return prior


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
    if hasattr(output, "to_tuple"):  # other diffusers outputs (PriorTransformerOutput, ...)
        return output.to_tuple()[0]
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


# ---- the guidance weight as a network input (guidance-distilled and consistency models) ----


def guidance_input_dim(model) -> int | None:
    """The width of the guidance-weight embedding a denoiser takes (diffusers'
    ``time_cond_proj_dim``), or None for a denoiser that runs classifier-free guidance instead."""
    inner = getattr(model, "module", model)
    config = getattr(inner, "config", None)
    return getattr(config, "time_cond_proj_dim", None) if config is not None else None


def guidance_embedding(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """Fourier features [B, dim] of the guidance weight, the extra input of a guidance-distilled
    student (Meng et al. 2023, Sec. 4.1) and of an LCM (Luo et al. 2023, Sec. 4.2).

    ``scale`` [B] is difflab's classifier-free guidance weight s (1 = no guidance); the embedded
    value is w = s - 1, the weight of Ho & Salimans 2022 and of the LCM paper, times 1000 in
    sinusoidal features of periods up to 10^4 (VDM's embedding, Kingma et al. 2021, App. B) -
    exactly what diffusers' ``StableDiffusionPipeline`` feeds a U-Net
    with ``time_cond_proj_dim`` (``get_guidance_scale_embedding(guidance_scale - 1)``), so plain
    diffusers samples these models as difflab does."""
    # Written out rather than taken from diffusers' get_timestep_embedding: the two formulas
    # agree only to ~1e-3 at these large arguments, and plain diffusers computes this one.
    w = (torch.as_tensor(scale, dtype=torch.float32).reshape(-1).cpu() - 1.0) * 1000.0
    half = dim // 2
    frequencies = torch.exp(torch.arange(half) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    angles = w[:, None] * frequencies[None, :]
    features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(features, (0, dim % 2))


def guidance_condition(model, scale: torch.Tensor | float | None, batch: int) -> dict:
    """The keyword arguments that give ``model`` the guidance weight ``scale`` (a float or one
    per sample): ``{"timestep_cond": embedding}`` for a guidance-conditioned U-Net, ``{}`` for
    any other denoiser (which then needs classifier-free guidance around it)."""
    dim = guidance_input_dim(model)
    if dim is None:
        return {}
    if scale is None:
        raise ValueError(
            "this denoiser takes the guidance weight as an input (time_cond_proj_dim = "
            f"{dim}); pass the weight (e.g. guidance=5.0) instead of running classifier-free "
            "guidance around it."
        )
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1).cpu().expand(batch)
    device = next(getattr(model, "module", model).parameters()).device
    return {"timestep_cond": guidance_embedding(scale, dim).to(device)}


def with_guidance_input(unet: UNet2DConditionModel, dim: int = 256) -> UNet2DConditionModel:
    """A copy of a text-conditional U-Net that also takes the guidance weight: diffusers'
    ``time_cond_proj_dim`` adds a linear projection of :func:`guidance_embedding` to the
    timestep features (as the LCM code conditions SD on w). The projection starts at zero, so the
    copy computes exactly what ``unet`` computes until training moves it (Meng et al. 2023 and
    Luo et al. 2023 initialise the student from the teacher the same way)."""
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(
            f"a guidance input needs a UNet2DConditionModel (its time_cond_proj_dim), got "
            f"{type(unet).__name__}; distil a U-Net teacher, or use LCM-LoRA, which adds no input."
        )
    if guidance_input_dim(unet) is not None:
        raise ValueError("this U-Net already takes the guidance weight as an input.")
    student = UNet2DConditionModel.from_config(unet.config, time_cond_proj_dim=dim)
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(f"unexpected weights moving to the student: {missing}, {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(next(unet.parameters()).device)


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
