"""The distillation recipes run a few steps end to end on a tiny teacher, and consistency
distillation (whose EMA target network and update counter live in the trained module) resumes
bit-identically."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_recipes import TINY_TRAIN
from test_train_resume import Crash, _crashing
from train_tiny import one_thread, tiny_config  # noqa: F401 (one_thread: autouse fixture)

from difflab.distill import ConsistencyDistillation, distillation_objective
from difflab.distill.lora import load_lcm_lora, unload_lcm_lora
from difflab.models.networks import text_conditional_unet, with_guidance_input
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.recipes import list_recipes, load_recipe, run_recipe
from difflab.recipes.text_to_image import CachedLatents
from difflab.schedules import make_schedule
from difflab.train import latest_checkpoint, train


def recipe(tmp_path, kind: str, teacher, options: str = "") -> object:
    path = tmp_path / f"{kind}.toml"
    path.write_text(
        f'kind = "{kind}"\n[recipe]\nteacher = "{teacher}"\ndataset_length = 8\n'
        f"sample_steps = 2\n{options}\n{TINY_TRAIN}"
    )
    return path


def test_shipped_distillation_recipes_parse():
    kinds = {
        "distill-progressive": "progressive",
        "distill-lcm": "consistency",
        "distill-lcm-guided": "consistency",
        "distill-lcm-shapes-t2i": "consistency",
        "distill-guidance-shapes-t2i": "progressive",
        "distill-lcm-guided-shapes-t2i": "consistency",
        "distill-multistep-consistency": "consistency",
        "distill-lcm-lora": "lcm_lora",
        "distill-lcm-lora-shapes-t2i": "lcm_lora",
        "consistency-training": "consistency",
    }
    assert set(kinds) <= set(list_recipes())
    for name, kind in kinds.items():
        assert load_recipe(name)[0] == kind


def test_progressive_recipe_smoke_and_resume_skips_finished_stages(
    tiny_pipeline_folder, tmp_path, monkeypatch
):
    options = "start_steps = 4\nguidance_steps = 2\nguidance_embedding_dim = 16"
    path = recipe(tmp_path, "progressive", tiny_pipeline_folder, options)
    figures = run_recipe(path, tmp_path / "run")
    assert figures["student_steps"] == [2, 1]
    assert list(figures["stages"]) == ["guidance", "steps-2", "steps-1"]
    for stage in ("guidance", "steps-2", "steps-1"):
        assert (tmp_path / "run" / stage / "pipeline" / "model_index.json").is_file()
        assert not (tmp_path / "run" / stage / "checkpoints").exists()  # deleted when done
    student = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert student.schedule.prediction_type == "v_prediction" and student.guidance_embedded
    assert student.sampling_settings()[0] == "ddim"
    (image,) = student("a red circle", steps=1, guidance=4.0)
    assert image.size == (32, 32)
    # a resumed, finished run trains nothing again
    import difflab.recipes.distill as distill

    monkeypatch.setattr(distill, "train", lambda *a, **k: pytest.fail("retrained a stage"))
    again = run_recipe(path, tmp_path / "run", resume=True)
    assert again["stages"] == {}


def test_progressive_recipe_can_stop_after_the_guidance_stage(tiny_pipeline_folder, tmp_path):
    options = "guidance_only = true\nguidance_steps = 2\nguidance_embedding_dim = 16"
    run = tmp_path / "run"
    figures = run_recipe(recipe(tmp_path, "progressive", tiny_pipeline_folder, options), run)
    assert figures["student_steps"] == [] and list(figures["stages"]) == ["guidance"]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["guidance", "pipeline"]
    student = TextToImagePipeline.from_pretrained(run / "pipeline")
    assert student.schedule.prediction_type == "v_prediction" and student.guidance_embedded
    stage_1 = load_file(run / "guidance/pipeline/unet/diffusion_pytorch_model.safetensors")
    weights = student.unet.state_dict()
    assert all(torch.equal(weights[k].to(v.dtype), v) for k, v in stage_1.items())


def test_lcm_recipe_smoke_keeps_the_target_network_in_checkpoints(tiny_pipeline_folder, tmp_path):
    path = recipe(tmp_path, "consistency", tiny_pipeline_folder, "guidance_embedding_dim = 16")
    figures = run_recipe(path, tmp_path / "run")
    assert figures["steps"] == 2
    weights = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors")
    assert int(weights["num_updates"]) == 2
    assert any(k.startswith("target.") for k in weights)
    lcm = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert lcm.guidance_embedded and lcm.sampling_settings()[0] == "lcm"
    assert lcm("a blue square", steps=4)[0].size == (32, 32)


def test_lcm_recipe_starts_from_a_guidance_distilled_student(tiny_pipeline_folder, tmp_path):
    options = "start_steps = 2\nguidance_steps = 2\nguidance_embedding_dim = 16"
    run_recipe(recipe(tmp_path, "progressive", tiny_pipeline_folder, options), tmp_path / "pd")
    start = tmp_path / "pd" / "guidance" / "pipeline"
    path = recipe(tmp_path, "consistency", tiny_pipeline_folder, f'student_init = "{start}"')
    run_recipe(path, tmp_path / "run")
    lcm = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    # the student keeps the start's v-prediction and w input, and samples as a consistency model
    assert lcm.schedule.prediction_type == "v_prediction" and lcm.guidance_embedded
    assert lcm.sampling_settings()[0] == "lcm"
    assert lcm("a blue square", steps=2)[0].size == (32, 32)
    # the teacher itself takes no w: not a student to start from; consistency training neither
    no_w = recipe(tmp_path, "consistency", tiny_pipeline_folder,
                  f'student_init = "{tiny_pipeline_folder}"')  # fmt: skip
    with pytest.raises(ValueError, match="guidance weight as an input"):
        run_recipe(no_w, tmp_path / "no_w")
    ct = recipe(tmp_path, "consistency", tiny_pipeline_folder,
                f'method = "train"\nstudent_init = "{start}"')  # fmt: skip
    with pytest.raises(ValueError, match="use ct_init"):
        run_recipe(ct, tmp_path / "ct")


def test_multistep_consistency_recipe_smoke_samples_deterministically(
    tiny_pipeline_folder, tmp_path
):
    options = "guidance_embedding_dim = 16\nsegments = 2"
    figures = run_recipe(recipe(tmp_path, "consistency", tiny_pipeline_folder, options),
                         tmp_path / "run")  # fmt: skip
    assert figures["steps"] == 2 and figures["method"].startswith("Heek et al. 2024")
    model = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    sampler, _, sampler_options = model.sampling_settings()
    assert sampler == "lcm" and sampler_options["renoise"] == "ddim"
    assert model("a blue square", steps=2)[0].size == (32, 32)
    # consistency training has no fixed segment edges; each segment needs a solver step
    for bad, message in [('method = "train"\nsegments = 2', "use segments = 1"),
                         ("segments = 51", "1 to num_intervals = 50 segments")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            run_recipe(recipe(tmp_path, "consistency", tiny_pipeline_folder, bad), tmp_path / "x")
    assert not (tmp_path / "x").exists()  # refused before any work


def test_consistency_training_recipe_smoke(tiny_pipeline_folder, tmp_path):
    path = recipe(tmp_path, "consistency", tiny_pipeline_folder, 'method = "train"\nloss = "huber"')
    assert run_recipe(path, tmp_path / "run")["steps"] == 2
    model = TextToImagePipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert model.sampling_settings() == ("lcm", 1.0, {"original_steps": 150,
                                                     "timestep_scaling": 10.0})  # fmt: skip
    assert not model.guidance_embedded


def test_lcm_lora_recipe_smoke_loads_and_unloads(tiny_pipeline_folder, tmp_path):
    path = recipe(tmp_path, "lcm_lora", tiny_pipeline_folder, "rank = 4\nalpha = 4.0")
    figures = run_recipe(path, tmp_path / "run")
    assert figures["steps"] == 2 and figures["lora_parameters"] > 0
    settings = json.loads((tmp_path / "run" / "lora" / "difflab_lora.json").read_text())
    assert settings["sampling"]["sampler"] == "lcm" and settings["sampling"]["guidance"] == 1.0
    teacher = TextToImagePipeline.from_pretrained(tiny_pipeline_folder)
    before = teacher.latents("a red circle", steps=2, sampler="ddim", seed=0)
    load_lcm_lora(teacher, tmp_path / "run" / "lora")
    assert teacher("a red circle", steps=2)[0].size == (32, 32)
    unload_lcm_lora(teacher)
    assert torch.equal(teacher.latents("a red circle", steps=2, sampler="ddim", seed=0), before)


def _tiny_distillation(seed: int = 0) -> ConsistencyDistillation:
    torch.manual_seed(seed)
    teacher = text_conditional_unet(
        block_out_channels=(16, 32), attention_head_dim=4, norm_num_groups=8
    )
    schedule = make_schedule("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012)
    return ConsistencyDistillation(
        with_guidance_input(teacher, 16), schedule, teacher=teacher, target_decay=0.95,
        empty=torch.zeros(1, 32, 384),
    )  # fmt: skip


def _latents(n: int = 12) -> CachedLatents:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(3, 32, 384, generator=g).half()
    return CachedLatents(torch.randn(n, 4, 8, 8, generator=g), torch.arange(n) % 3, table)


def test_consistency_distillation_resumes_bit_identically(tmp_path):
    """The EMA target network theta- and the update counter are part of the trained module, so
    the Trainer checkpoints them with the student: crash-and-resume equals a straight run."""
    config = tiny_config(max_steps=6, batch_size=4, grad_accum_steps=2, checkpoint_every=3,
                         ema_decay=0.0)  # fmt: skip
    objective = distillation_objective((2.0, 6.0))
    straight = train(config, _tiny_distillation(), objective, _latents(), tmp_path / "a")
    with pytest.raises(Crash):
        train(config, _tiny_distillation(), _crashing(objective, after_calls=9), _latents(),
              tmp_path / "b")  # fmt: skip
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000003"
    resumed = train(config, _tiny_distillation(seed=5), objective, _latents(), tmp_path / "b",
                    resume=True)  # fmt: skip
    assert resumed.losses == straight.losses
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and int(a["num_updates"]) == 6
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # the target moved towards the student, and is not the student
    s, t = a["student.conv_in.weight"], a["target.conv_in.weight"]
    assert not torch.equal(s, t)
