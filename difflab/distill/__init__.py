"""Few-step generation by distillation: progressive distillation with guidance distilled in
(Salimans & Ho 2022; Meng et al. 2023), latent consistency distillation and consistency
training (Song et al. 2023; Luo et al. 2023) and LCM-LoRA (Luo et al. 2023b).

Each method is a small ``nn.Module`` whose ``forward`` returns its loss, trained by the one
Trainer (:func:`difflab.train.train`) with :func:`distillation_objective`; the samplers for the
results are :func:`difflab.samplers.ddim` (trailing spacing) and :func:`difflab.samplers.lcm`.
The recipes ``distill-progressive``, ``distill-lcm`` and ``distill-lcm-lora``
(:mod:`difflab.recipes.distill`) run them on a shipped text-to-image teacher.
"""

from difflab.distill.common import (
    conditional_denoiser,
    distillation_objective,
    guided_denoiser,
)
from difflab.distill.consistency import ConsistencyDistillation, TrainingCurriculum
from difflab.distill.lora import add_lora, load_lcm_lora, save_lora, unload_lcm_lora
from difflab.distill.progressive import (
    ProgressiveDistillation,
    halving_rounds,
    progressive_target,
    truncated_snr_weight,
)

__all__ = [
    "ConsistencyDistillation",
    "ProgressiveDistillation",
    "TrainingCurriculum",
    "add_lora",
    "conditional_denoiser",
    "distillation_objective",
    "guided_denoiser",
    "halving_rounds",
    "load_lcm_lora",
    "progressive_target",
    "save_lora",
    "truncated_snr_weight",
    "unload_lcm_lora",
]
