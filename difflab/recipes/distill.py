"""Recipes: few-step students of a text-to-image teacher (``teacher = "shapes-t2i-small"``, a shipped
name or a pipeline folder), trained by the one Trainer on the same encoded shapes latents and
captions the text_to_image recipe trains on (:func:`~difflab.recipes.text_to_image.
cached_encode_dataset`, with the teacher's VAE).

- ``progressive`` (``distill-progressive``): Meng et al. 2023's guided progressive
  distillation: stage 1 (``guidance_steps`` updates) distils the guided teacher into a student
  that takes w as an input and predicts v; then one round of ``[train] max_steps`` updates per
  halving of the step count (Salimans & Ho 2022, Alg. 2), ``start_steps`` -> ... -> 1. Each
  stage is its own Trainer run folder (``out/guidance``, ``out/steps-32``, ...) ending in a
  ``pipeline``; ``--resume`` skips the finished stages and resumes the current one.
- ``consistency`` (``distill-lcm``): latent consistency distillation (Luo et al. 2023) of the
  guided teacher into a w-conditioned student, or with ``method = "train"`` consistency
  training without teacher targets (Song et al. 2023, Alg. 3).
- ``lcm_lora`` (``distill-lcm-lora``): the same distillation as a LoRA on the frozen teacher
  (Luo et al. 2023b), written to ``out/lora``.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from difflab.data.shapes import ShapesDataset
from difflab.distill.common import distillation_objective
from difflab.distill.consistency import (
    ConsistencyDistillation,
    TrainingCurriculum,
    check_segments,
)
from difflab.distill.lora import AdapterFreeView, add_lora, save_lora
from difflab.distill.progressive import ProgressiveDistillation, halving_rounds, student_schedule
from difflab.models.networks import guidance_input_dim, parameter_count, with_guidance_input
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.recipes.text_to_image import cached_encode_dataset, grid_sample_fn
from difflab.train import TrainConfig, latest_checkpoint, train

# A progressive student of N steps samples with N deterministic DDIM steps on the trailing grid
# it was distilled on (see difflab.distill.progressive.round_grid); its folder adds "steps": N.
PROGRESSIVE_DEFAULTS = {"sampler": "ddim", "sampler_options": {"spacing": "trailing"}}
CITATIONS = {
    "progressive": "Salimans & Ho 2022, Alg. 2; Meng et al. 2023 (guidance distillation)",
    "consistency": "Luo et al. 2023 (LCM), Alg. 1; Song et al. 2023",
    "multistep_consistency": "Heek et al. 2024 (multistep consistency), Alg. 2; Luo et al. 2023",
    "consistency_training": "Song et al. 2023, Alg. 3",
    "lcm_lora": "Luo et al. 2023b (LCM-LoRA)",
}


@dataclass
class DistillRecipe:
    """Options every distillation recipe shares."""

    teacher: str = "shapes-t2i-small"  # shipped model name or text-to-image pipeline folder
    dataset_length: int = 20_000  # encoded shapes scenes (cached, shared with text_to_image)
    guidance_min: float = 2.0  # w (classifier-free guidance weight) drawn per example in
    guidance_max: float = 8.0  # [guidance_min, guidance_max]; 1 = no guidance
    sample_steps: int = 4  # the sample grids written during training
    sample_guidance: float = 5.0


@dataclass
class ProgressiveRecipe(DistillRecipe):
    """Options of ``progressive``; ``[train] max_steps`` is the length of each halving round."""

    start_steps: int = 64  # the teacher's DDIM steps; students get 32, 16, ..., 1
    guidance_steps: int = 1000  # updates of stage 1 (the w-conditioned, v-predicting student)
    prediction_type: str = "v_prediction"
    guidance_embedding_dim: int = 256
    keep_stage_checkpoints: bool = False  # delete a finished stage's checkpoints
    # stop after stage 1: its w-conditioned, v-predicting student is the run's pipeline (what
    # an LCM can start from, the ``student_init`` of the consistency recipes)
    guidance_only: bool = False


@dataclass
class ConsistencyRecipe(DistillRecipe):
    """Options of ``consistency`` (latent consistency distillation / consistency training)."""

    method: str = "distill"  # "distill" (LCM) or "train" (consistency training, no teacher)
    num_intervals: int = 50  # solver steps N of the grid (skip k = 1000 / N = 20 as in LCM)
    target_decay: float = 0.95  # mu of the EMA target network
    timestep_scaling: float = 10.0
    loss: str = "l2"  # or "huber"
    huber_c: float = 0.001
    guidance_embedding_dim: int = 256
    # multistep consistency (Heek et al. 2024): f maps to the start of one of this many
    # segments of the ODE and is sampled deterministically in as many steps; 1 = LCM
    segments: int = 1
    # distill: the student starts from this w-conditioned pipeline (a folder or shipped name,
    # e.g. the guidance-distilled stage of distill-progressive) instead of the teacher
    student_init: str = ""
    # consistency training (Song et al. 2023, App. C): N(k) from s0 + 1 to s1 + 1 grid points
    ct_s0: int = 2
    ct_s1: int = 150
    ct_mu0: float = 0.9
    ct_init: str = "random"  # "random" (Alg. 3) or "teacher" (start from the teacher's weights)


@dataclass
class LCMLoRARecipe(DistillRecipe):
    """Options of ``lcm_lora``."""

    rank: int = 16
    alpha: float = 16.0
    num_intervals: int = 50
    target_decay: float = 0.0  # the online student without gradients, as the LCM-LoRA code
    timestep_scaling: float = 10.0
    loss: str = "l2"
    huber_c: float = 0.001


# ---------------------------------------------------------------------------------------------
# shared


def load_teacher(name_or_folder: str) -> TextToImagePipeline:
    """The teacher pipeline (a shipped name or a folder)."""
    from difflab.zoo import load_pipeline

    teacher = load_pipeline(name_or_folder)
    if not isinstance(teacher, TextToImagePipeline):
        raise ValueError(
            f"the teacher {name_or_folder!r} is a {type(teacher).__name__}; distillation needs a "
            'text-to-image pipeline, e.g. teacher = "shapes-t2i-small".'
        )
    return teacher


def training_data(teacher: TextToImagePipeline, options: DistillRecipe, seed: int):
    """The encoded shapes latents and caption states the teacher's recipe trains on (its VAE
    and text encoder; cached on disk under a key of those inputs)."""
    from difflab.zoo import resolve_model

    levels = 1 if teacher.vae is None else len(teacher.vae.config.block_out_channels)
    image_size = teacher.unet.config.sample_size * 2 ** (levels - 1)
    vae_path = None if teacher.vae is None else resolve_model(options.teacher) / "vae"
    data = ShapesDataset(length=options.dataset_length, size=image_size, seed=seed)
    return cached_encode_dataset(data, teacher.vae, vae_path, teacher.prompt_encoder)


def student_pipeline(teacher, unet, schedule, defaults: dict, name: str) -> TextToImagePipeline:
    """A pipeline with the teacher's VAE and text encoder around a student denoiser."""
    return TextToImagePipeline(
        unet.eval(), teacher.vae, teacher.prompt_encoder, schedule, name=name, defaults=defaults
    )


def lcm_defaults(options, guidance: float | None = None, segments: int = 1) -> dict:
    """The sampling defaults of a consistency model: the ``lcm`` sampler on its solver grid, at
    the step count its training grids were sampled with (``sample_steps``, 4); a multistep
    consistency model (``segments`` > 1) re-noises by its DDIM jumps (``renoise = "ddim"``)."""
    sampler_options = {
        "original_steps": options.num_intervals,
        "timestep_scaling": options.timestep_scaling,
    }
    if segments > 1:
        sampler_options["renoise"] = "ddim"
    defaults = {"sampler": "lcm", "sampler_options": sampler_options, "steps": options.sample_steps}
    return defaults if guidance is None else {**defaults, "guidance": guidance}


def _final(result):
    """The distillation module to export: the Trainer's EMA copy if there is one."""
    return (result.ema_model or result.model).eval()


# ---------------------------------------------------------------------------------------------
# progressive distillation


def run_progressive(
    options: ProgressiveRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Stage 1 then the halving rounds; each stage's student is saved to ``out/STAGE/pipeline``
    and the last (1-step) one also to ``out/pipeline`` (stage 1's with ``guidance_only``)."""
    teacher = load_teacher(options.teacher)
    data = training_data(teacher, options, config.seed)
    empty = teacher.prompt_encoder([""], warn=False)
    schedule = student_schedule(teacher.schedule, options.prediction_type)
    objective = distillation_objective((options.guidance_min, options.guidance_max))
    rounds = [] if options.guidance_only else halving_rounds(options.start_steps)
    stages = [("guidance", None, options.guidance_steps)]
    stages += [(f"steps-{n}", n, config.max_steps) for n in rounds]
    previous, previous_schedule = teacher.unet.eval(), teacher.schedule
    figures: dict = {"stages": {}}
    for name, steps, updates in stages:
        folder = out / name
        defaults = {} if steps is None else {**PROGRESSIVE_DEFAULTS, "steps": steps}
        if resume and (folder / "pipeline" / "model_index.json").is_file():
            done = TextToImagePipeline.from_pretrained(folder / "pipeline")
            previous, previous_schedule = done.unet, done.schedule
            continue
        if guidance_input_dim(previous) is None:
            student = with_guidance_input(previous, options.guidance_embedding_dim)
        else:
            student = copy.deepcopy(previous)
        module = ProgressiveDistillation(
            student.requires_grad_(True).train(), previous, previous_schedule, schedule, steps,
            empty,
        )  # fmt: skip

        def pipeline_of(model, defaults=defaults):
            return student_pipeline(teacher, model.student, schedule, defaults, "progressive")

        sample_fn = grid_sample_fn(
            pipeline_of, steps=steps or options.sample_steps, guidance=options.sample_guidance
        )
        has_checkpoint = latest_checkpoint(folder / "checkpoints") is not None
        result = train(
            dataclasses.replace(config, max_steps=updates), module, objective, data, folder,
            sample_fn=sample_fn, resume=resume and has_checkpoint,
            overwrite=overwrite or (resume and not has_checkpoint),
        )  # fmt: skip
        final = _final(result).student
        saved = student_pipeline(teacher, final, schedule, defaults, name)
        saved.save_pretrained(folder / "pipeline", include_text_encoder=False)
        if not options.keep_stage_checkpoints:
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        figures["stages"][name] = {"steps": result.step, "train_seconds": result.total_seconds}
        previous, previous_schedule = final, schedule
    last_stage = f"steps-{rounds[-1]}" if rounds else "guidance"
    last = TextToImagePipeline.from_pretrained(out / last_stage / "pipeline")
    last.save_pretrained(out / "pipeline", include_text_encoder=False)
    return {
        "method": CITATIONS["progressive"],
        "parameters": parameter_count(last.unet),
        "student_steps": rounds,
        "pipeline": str(out / "pipeline"),
        **figures,
    }


# ---------------------------------------------------------------------------------------------
# latent consistency distillation / consistency training


def run_consistency(
    options: ConsistencyRecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train the consistency model and save it to ``out/pipeline`` (LCMScheduler folder)."""
    if options.method not in ("distill", "train"):
        raise ValueError(f'unknown method {options.method!r}; use "distill" or "train".')
    distill = options.method == "distill"
    if options.student_init and not distill:
        raise ValueError(
            "student_init starts a distillation from another student; consistency training "
            '(method = "train") starts from the teacher or at random: use ct_init.'
        )
    check_segments(options.segments, options.num_intervals, fixed_grid=distill)
    teacher = load_teacher(options.teacher)
    schedule = teacher.schedule
    if distill:
        if options.student_init:
            student, schedule = initial_student(teacher, options.student_init)
        else:
            student = with_guidance_input(teacher.unet, options.guidance_embedding_dim)
        curriculum, guidance_range = None, (options.guidance_min, options.guidance_max)
    else:
        student = copy.deepcopy(teacher.unet)
        if options.ct_init == "random":
            student = type(student).from_config(student.config)
        elif options.ct_init != "teacher":
            raise ValueError(f'unknown ct_init {options.ct_init!r}; use "random" or "teacher".')
        curriculum = TrainingCurriculum(
            config.max_steps, options.ct_s0, options.ct_s1, options.ct_mu0
        )
        guidance_range = (1.0, 1.0)
    data = training_data(teacher, options, config.seed)  # after the options are checked
    empty = teacher.prompt_encoder([""], warn=False)
    module = ConsistencyDistillation(
        student.requires_grad_(True).train(), schedule,
        teacher=teacher.unet if distill else None, teacher_schedule=teacher.schedule,
        num_intervals=options.num_intervals, curriculum=curriculum,
        target_decay=options.target_decay, timestep_scaling=options.timestep_scaling,
        loss=options.loss, huber_c=options.huber_c, empty=empty, segments=options.segments,
    )  # fmt: skip
    intervals = curriculum.points(config.max_steps) - 1 if curriculum else options.num_intervals
    sampling = dataclasses.replace(options, num_intervals=intervals)
    defaults = lcm_defaults(sampling, None if distill else 1.0, options.segments)

    def pipeline_of(model):
        return student_pipeline(teacher, model.student, schedule, defaults, "lcm")

    sample_fn = grid_sample_fn(
        pipeline_of, steps=options.sample_steps,
        guidance=options.sample_guidance if distill else 1.0,
    )  # fmt: skip
    result = train(
        config, module, distillation_objective(guidance_range), data, out, sample_fn=sample_fn,
        resume=resume, overwrite=overwrite,
    )  # fmt: skip
    final = pipeline_of(_final(result))
    final.save_pretrained(out / "pipeline", include_text_encoder=False)
    method_key = "consistency" if distill else "consistency_training"
    method_key = "multistep_consistency" if options.segments > 1 else method_key
    return {
        "method": CITATIONS[method_key],
        "parameters": parameter_count(final.unet),
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "pipeline": str(out / "pipeline"),
    }


def initial_student(teacher: TextToImagePipeline, name_or_folder: str):
    """The ``student_init`` option: a copy of another w-conditioned denoiser of the teacher's
    latent space and noise schedule to start consistency distillation from, and its schedule
    (declaring its prediction type). Starting from a guidance-distilled student (Meng et al.
    2023, stage 1; ``out/guidance/pipeline`` of distill-progressive) means the student's x0
    estimate is already the guided one at every t, so the consistency targets need not carry
    the guidance up the whole grid from t = 0 (the teacher itself with a zero-initialised w
    input, the default, starts unguided)."""
    from difflab.recipes.text_to_image import same_latent_space, same_noise_levels

    start = load_teacher(name_or_folder)
    start_vae = None if start.vae is None else start.vae.state_dict()
    if not (
        same_latent_space(teacher.vae, start_vae)
        and same_noise_levels(start.schedule, teacher.schedule)
    ):
        raise ValueError(
            f"student_init = {name_or_folder!r} was trained on another latent space or noise "
            "schedule than the teacher; start from a student of this teacher "
            "(e.g. runs/distill-progressive/guidance/pipeline), or leave student_init empty."
        )
    if guidance_input_dim(start.unet) is None:
        raise ValueError(
            f"student_init = {name_or_folder!r} does not take the guidance weight as an input; "
            "start from a guidance-distilled student (distill-progressive's "
            "out/guidance/pipeline), or leave student_init empty to start from the teacher."
        )
    return copy.deepcopy(start.unet).float(), start.schedule


# ---------------------------------------------------------------------------------------------
# LCM-LoRA


def run_lcm_lora(
    options: LCMLoRARecipe, config: TrainConfig, out: Path, resume: bool, overwrite: bool
) -> dict:
    """Train an LCM-LoRA on the frozen teacher and save it to ``out/lora``."""
    teacher = load_teacher(options.teacher)
    data = training_data(teacher, options, config.seed)
    empty = teacher.prompt_encoder([""], warn=False)
    unet = add_lora(teacher.unet, options.rank, options.alpha).train()
    module = ConsistencyDistillation(
        unet, teacher.schedule, teacher=AdapterFreeView(unet),
        num_intervals=options.num_intervals, target_decay=options.target_decay,
        timestep_scaling=options.timestep_scaling, loss=options.loss, huber_c=options.huber_c,
        empty=empty,
    )  # fmt: skip
    defaults = lcm_defaults(options, guidance=1.0)

    def pipeline_of(model):
        return student_pipeline(teacher, model.student, teacher.schedule, defaults, "lcm-lora")

    sample_fn = grid_sample_fn(pipeline_of, steps=options.sample_steps)
    objective = distillation_objective((options.guidance_min, options.guidance_max))
    result = train(
        config, module, objective, data, out, sample_fn=sample_fn, resume=resume,
        overwrite=overwrite,
    )  # fmt: skip
    settings = {
        "method": CITATIONS["lcm_lora"],
        "teacher": options.teacher,
        "sampling": defaults,
        "distilled_guidance": [options.guidance_min, options.guidance_max],
        "rank": options.rank,
        "alpha": options.alpha,
    }
    save_lora(_final(result).student, out / "lora", settings)
    lora_parameters = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
    return {
        "method": CITATIONS["lcm_lora"],
        "lora_parameters": lora_parameters,
        "steps": result.step,
        "train_seconds": result.total_seconds,
        "lora": str(out / "lora"),
    }
