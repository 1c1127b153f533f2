"""Few-step generation: the math of progressive and consistency distillation, the consistency
sampler against diffusers' LCMScheduler, w-conditioned pipelines in plain diffusers and the
CLI, and LCM-LoRA loading and unloading. Tiny random networks: plumbing and math, not quality."""

import json

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, TCDScheduler
from PIL import Image
from test_diffusers_crosscheck import assert_same_steps, stand_in_model, start
from train_tiny import one_thread  # noqa: F401 (autouse fixture)

from difflab import samplers
from difflab.diffusion import q_sample
from difflab.distill import (
    ConsistencyDistillation,
    TrainingCurriculum,
    add_lora,
    halving_rounds,
    load_lcm_lora,
    progressive_target,
    save_lora,
    truncated_snr_weight,
    unload_lcm_lora,
)
from difflab.distill.consistency import CLEAN, segment_edges, segment_target
from difflab.distill.progressive import round_grid
from difflab.models.networks import (
    call_denoiser,
    guidance_condition,
    guidance_embedding,
    text_conditional_unet,
    with_guidance_input,
)
from difflab.pipelines.text_to_image import TextToImagePipeline
from difflab.schedules import (
    consistency_function,
    consistency_scalings,
    lcm_timesteps,
    make_schedule,
    solver_timesteps,
    timesteps,
)

SD = dict(beta_start=0.00085, beta_end=0.012)
LCM_DEFAULTS = {"sampler": "lcm", "sampler_options": {"original_steps": 50}}


def tiny_unet(**kwargs):
    torch.manual_seed(0)
    return text_conditional_unet(
        block_out_channels=(32, 64), attention_head_dim=4, norm_num_groups=8, **kwargs
    ).eval()


def w_conditioned(seed: int = 1, dim: int = 32):
    """A tiny guidance-conditioned U-Net whose guidance projection is not zero (as after
    training), so the weight changes its output."""
    student = with_guidance_input(tiny_unet(), dim)
    with torch.no_grad():
        proj = student.time_embedding.cond_proj.weight
        proj.copy_(torch.randn(proj.shape, generator=torch.Generator().manual_seed(seed)) * 0.5)
    return student.eval()


# ---- the consistency function -----------------------------------------------------------------


def test_consistency_boundary_condition_holds_exactly():
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    wild_x0 = 1e6 * torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(consistency_function(x, wild_x0, 0), x)
    assert torch.equal(consistency_function(x, wild_x0, torch.zeros(3, dtype=torch.long)), x)
    c_skip, c_out = consistency_scalings(torch.tensor([0, 19, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[2] < 1e-7 and abs(c_out[2] - 1) < 1e-7  # far from t_min f is the x0 estimate
    # ... and through a network: the student's f at t_min returns its input bit for bit
    schedule = make_schedule("scaled_linear", 1000, **SD)
    module = ConsistencyDistillation(w_conditioned(), schedule, target_decay=0.0)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    context = torch.randn(2, 32, 384, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f = module.consistency(module.student, z, torch.zeros(2, dtype=torch.long), context,
                               torch.tensor([3.0, 7.0]))  # fmt: skip
    assert torch.equal(f, z)


def test_solver_grid_is_the_lcm_skipping_grid():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    grid = solver_timesteps(schedule, 50)
    assert grid[:3].tolist() == [0, 19, 39] and grid[-1] == 999 and len(grid) == 51
    assert solver_timesteps(schedule, 150)[-1] == 999  # any N reaches T - 1
    with pytest.raises(ValueError, match="between 1 and 500 intervals"):
        solver_timesteps(schedule, 501)


def test_training_curriculum_grows_the_grid_and_the_decay():
    curriculum = TrainingCurriculum(total_steps=100, s0=2, s1=150, mu0=0.9)
    assert curriculum.points(0) == 2 and curriculum.points(100) == 151
    assert curriculum.points(50) < curriculum.points(51) + 1
    assert curriculum.decay(0) == pytest.approx(0.9) and curriculum.decay(100) > 0.99


# ---- progressive distillation -----------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("student_steps,index", [(4, 1), (4, 3), (1, 0)])
def test_one_student_ddim_step_on_x_tilde_lands_where_two_teacher_steps_land(
    prediction_type, student_steps, index
):
    schedule = make_schedule("scaled_linear", 1000, prediction_type=prediction_type, **SD)
    teacher = stand_in_model(schedule)
    grid = round_grid(schedule, student_steps)
    t, t_mid, t_next = (int(grid[2 * index + k]) for k in range(3))
    z_t = start(4)
    # two teacher DDIM steps by hand (Song et al. 2021, Eq. 12, eta = 0)
    a = schedule.alphas_cumprod

    def by_hand(z, s, s_next):
        x0, eps = samplers.denoise(teacher, schedule, z, s)
        abar_next = 1.0 if s_next < 0 else float(a[s_next])
        return abar_next**0.5 * x0 + (1 - abar_next) ** 0.5 * eps

    z_next = by_hand(by_hand(z_t, t, t_mid), t_mid, t_next)
    # ... which difflab's ddim also takes along the teacher's grid (its last step goes to -1)
    states, visited = [], [t, t_mid] + ([t_next] if t_next >= 0 else [])
    samplers.ddim(teacher, schedule, z_t, len(visited), spacing=visited, callback=states.append)
    assert torch.allclose(states[1].x, z_next, atol=1e-12)
    batch = torch.full((z_t.shape[0],), t)
    x_tilde = progressive_target(z_t, z_next, batch, torch.full_like(batch, t_next), schedule)
    # a student predicting x-tilde ("sample") lands on z_next in one DDIM step from z_t
    student_schedule = make_schedule("scaled_linear", 1000, prediction_type="sample", **SD)
    landed, visited = [], [t] + ([t_next] if t_next >= 0 else [])
    samplers.ddim(lambda x, s: x_tilde, student_schedule, z_t, len(visited), spacing=visited,
                  callback=landed.append)  # fmt: skip
    assert torch.allclose(landed[0].x, z_next, atol=1e-10), (landed[0].x - z_next).abs().max()


def test_round_grids_nest_and_halve():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    assert halving_rounds(64) == [32, 16, 8, 4, 2, 1]
    for n in halving_rounds(64):
        grid = round_grid(schedule, n)
        assert grid[::2][:-1].tolist() == timesteps(schedule, n, "trailing").tolist()
        assert grid[-1] == -1 and len(grid) == 2 * n + 1
    with pytest.raises(ValueError, match="power of two"):
        halving_rounds(48)
    with pytest.raises(ValueError, match="not every other timestep"):
        round_grid(schedule, 48)  # 96 trailing steps round differently


def test_truncated_snr_weight():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    weight = truncated_snr_weight(schedule, torch.tensor([0, 999]))
    assert weight[0] == schedule.snr[0] > 1 and weight[1] == 1.0


# ---- the guidance weight as an input --------------------------------------------------------


def test_guidance_embedding_matches_diffusers_and_changes_the_output():
    scale = torch.tensor([1.0, 2.5, 8.0, 15.0])
    for dim in (256, 33):
        theirs = StableDiffusionPipeline.get_guidance_scale_embedding(None, scale - 1, dim)
        assert torch.equal(guidance_embedding(scale, dim), theirs)
    teacher = tiny_unet()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t, context = torch.tensor([10, 600]), torch.randn(2, 32, 384)
    fresh = with_guidance_input(teacher, 32)  # zero projection: the teacher exactly
    with torch.no_grad():
        base = call_denoiser(teacher, x, t, encoder_hidden_states=context)

        def out(net, w):
            condition = guidance_condition(net, w, 2)
            return call_denoiser(net, x, t, encoder_hidden_states=context, **condition)

        assert torch.equal(out(fresh, 2.0), base)
        trained = w_conditioned()
        assert not torch.allclose(out(trained, 2.0), out(trained, 8.0), atol=1e-4)
    with pytest.raises(ValueError, match="takes the guidance weight as an input"):
        guidance_condition(trained, None, 2)


# ---- the consistency sampler -------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_sampler_steps_and_timesteps_match_lcm_scheduler(steps):
    schedule = make_schedule("scaled_linear", 1000, **SD)
    reference = LCMScheduler(**SD, beta_schedule="scaled_linear")
    reference.set_timesteps(steps)
    assert lcm_timesteps(schedule, steps).tolist() == reference.timesteps.tolist()
    calls, seen = [], []

    def model(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    samplers.lcm(model, schedule, torch.randn(2, 3), steps, torch.Generator().manual_seed(0),
                 callback=lambda s: seen.append(s.timestep))  # fmt: skip
    assert calls == seen == reference.timesteps.tolist()
    with pytest.raises(ValueError, match="1 to 50 steps"):
        samplers.lcm(model, schedule, torch.randn(2, 3), 51)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_lcm_sampler_matches_diffusers_lcm_scheduler(prediction_type, steps):
    schedule = make_schedule("scaled_linear", 1000, prediction_type=prediction_type, **SD)
    reference = LCMScheduler(**SD, beta_schedule="scaled_linear", prediction_type=prediction_type)
    model = stand_in_model(schedule)
    assert_same_steps(
        lambda cb: samplers.lcm(
            model, schedule, start(), steps, torch.Generator().manual_seed(4), callback=cb
        ),
        reference,
        schedule,
        model,
        start(),
        torch.Generator().manual_seed(4),
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [2, 4, 8])
def test_deterministic_consistency_sampler_matches_diffusers_tcd_at_gamma_0(prediction_type, steps):
    """renoise = "ddim" (multistep consistency sampling, Heek et al. 2024) re-noises with the
    noise the step implies - TCDScheduler with gamma (eta) = 0, step for step; TCD's last step
    stops at t = 0 instead of returning the clean estimate, so the comparison ends before it."""
    schedule = make_schedule("scaled_linear", 1000, prediction_type=prediction_type, **SD)
    reference = TCDScheduler(**SD, beta_schedule="scaled_linear", prediction_type=prediction_type)
    reference.alphas_cumprod = schedule.alphas_cumprod.clone()
    model, states = stand_in_model(schedule), []
    samplers.lcm(model, schedule, start(), steps, renoise="ddim",
                 callback=lambda step: states.append(step.x.clone()))  # fmt: skip
    visited = lcm_timesteps(schedule, steps).tolist()
    reference.set_timesteps(timesteps=visited)
    assert reference.timesteps.tolist() == visited
    current = start()
    for i, t in enumerate(visited[:-1]):
        t_batch = torch.full((current.shape[0],), t, dtype=torch.long)
        theirs = reference.step(model(current, t_batch), t, current, eta=0.0).prev_sample
        assert torch.allclose(states[i], theirs, atol=1e-5, rtol=1e-5), (
            (states[i] - theirs).abs().max()
        )
        current = states[i]
    fresh = samplers.lcm(model, schedule, start(), steps, torch.Generator().manual_seed(0))
    assert not torch.allclose(fresh, states[-1], atol=1e-3)  # LCM's fresh noise is another path
    with pytest.raises(ValueError, match="unknown renoise 'sde'"):
        samplers.lcm(model, schedule, start(), steps, renoise="sde")


# ---- multistep consistency (Heek et al. 2024) ----------------------------------------------------


def test_segment_edges_are_the_next_timestep_that_sampling_visits():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    grid = solver_timesteps(schedule, 50)
    assert torch.all(segment_edges(schedule, 50, 1) == CLEAN)  # one segment: LCM, to the data
    visited = lcm_timesteps(schedule, 4).tolist()
    assert visited == [999, 759, 499, 259]
    edges = segment_edges(schedule, 50, 4)
    for t, edge in zip(grid.tolist(), edges.tolist(), strict=True):
        below = [v for v in visited if v < t]
        assert edge == (max(below) if below else CLEAN), (t, edge)
    assert edges[grid == 759].item() == 499 and edges[grid == 779].item() == 759


@pytest.mark.parametrize("t,t_prev,t_edge", [(999, 979, 759), (600, 580, 499), (519, 499, 499),
                                             (200, 180, CLEAN)])  # fmt: skip
def test_segment_target_is_the_x0_whose_ddim_jump_lands_on_the_target_networks_edge_point(
    t, t_prev, t_edge
):
    schedule = make_schedule("scaled_linear", 1000, **SD)
    z, z_prev, x0_prev = start(1), start(2), start(3)
    t, t_prev, t_edge = (torch.full((z.shape[0],), v) for v in (t, t_prev, t_edge))
    target = segment_target(schedule, z, t, z_prev, t_prev, x0_prev, t_edge)

    def jump(x0, z_from, t_from):  # one DDIM step with the given x0 estimate to the edge
        return samplers.ddim_step(lambda x, s: x0, sample_schedule, z_from, t_from, t_edge)

    sample_schedule = make_schedule("scaled_linear", 1000, prediction_type="sample", **SD)
    assert torch.allclose(jump(target, z, t), jump(x0_prev, z_prev, t_prev), atol=1e-9)
    if t_edge[0] == CLEAN:  # the last segment: the LCM target itself
        assert torch.allclose(target, x0_prev, atol=1e-12)
    # on an exact trajectory (one x0, one noise) the target is that x0
    x0, noise = start(4), start(5)
    exact = segment_target(schedule, q_sample(x0, t, schedule, noise), t,
                           q_sample(x0, t_prev, schedule, noise), t_prev, x0, t_edge)  # fmt: skip
    assert torch.allclose(exact, x0, atol=1e-8)


def test_multistep_consistency_loss_on_the_last_segment_is_the_lcm_loss():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(2, 8, 384, generator=torch.Generator().manual_seed(2))
    scale = torch.full((2,), 4.0)
    teacher, empty = tiny_unet(), torch.zeros(1, 8, 384)

    def loss(segments, n):
        module = ConsistencyDistillation(w_conditioned(), schedule, teacher=teacher, empty=empty,
                                         segments=segments)  # fmt: skip
        with torch.no_grad():
            return module(x0, context, torch.full((2,), (n + 0.5) / 50), noise, scale)

    assert loss(4, 5) == loss(1, 5)  # grid[6] = 119 lies in the last segment, which ends at 0
    assert not torch.isclose(loss(4, 30), loss(1, 30))  # grid[31] = 619 maps to 499, not to 0
    with pytest.raises(ValueError, match="1 to num_intervals = 50 segments"):
        ConsistencyDistillation(tiny_unet(), schedule, segments=51)
    with pytest.raises(ValueError, match="consistency training"):
        ConsistencyDistillation(tiny_unet(), schedule, segments=4,
                                curriculum=TrainingCurriculum(100))  # fmt: skip


# ---- a latent consistency model's folder: defaults, plain diffusers, the CLI --------------------


@pytest.fixture(scope="module")
def lcm_pipeline(tiny_pipeline):
    return TextToImagePipeline(
        w_conditioned(), tiny_pipeline.vae, tiny_pipeline.prompt_encoder,
        tiny_pipeline.schedule, defaults=LCM_DEFAULTS,
    )  # fmt: skip


def test_lcm_folder_says_its_sampler_and_plain_diffusers_reproduces_it(lcm_pipeline, tmp_path):
    """diffusers' StableDiffusionPipeline with the folder's LCMScheduler gives difflab's latents:
    at 1 step through the pipelines as they are (no noise is drawn); at 4 steps, where LCM
    sampling re-noises between steps, when both draw that noise from the same generator (difflab's
    pipeline keeps a separate generator for it, so the comparison drives the sampler directly)."""
    lcm_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    assert loaded.defaults == LCM_DEFAULTS and loaded.guidance_embedded
    assert loaded.sampling_settings() == ("lcm", 5.0, {"original_steps": 50})
    with pytest.raises(ValueError, match="no classifier-free guidance to limit"):
        loaded.latents(["a red circle"], steps=1, guidance_interval=(0, 600))
    theirs = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(theirs.scheduler, LCMScheduler)
    prompt = "a red circle above a blue square"
    for steps in (1, 4):
        g = torch.Generator().manual_seed(21)
        reference = theirs(prompt, num_inference_steps=steps, guidance_scale=3.0, generator=g,
                           output_type="latent").images  # fmt: skip
        g = torch.Generator().manual_seed(21)
        x_T = loaded.initial_noise(1, [g])
        model = loaded.conditioned_model([prompt], 1, guidance=3.0)
        with torch.no_grad():
            ours = samplers.lcm(model, loaded.schedule, x_T, steps, g)
        assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
        if steps == 1:
            plain = loaded.latents(prompt, steps=1, guidance=3.0,
                                   seed=[torch.Generator().manual_seed(21)])  # fmt: skip
            assert torch.allclose(plain, reference, atol=1e-5)


def test_generate_command_uses_the_shipped_lcms_sampler(lcm_pipeline, tmp_path, monkeypatch):
    """`difflab generate --model shapes-t2i-lcm --steps 4`, with the LCM shipped into a zoo."""
    from typer.testing import CliRunner

    import difflab.zoo
    from difflab.cli import app
    from difflab.generate import settings_from_png

    difflab.zoo.ship(lcm_pipeline, "shapes-t2i-lcm", "# tiny LCM\n", zoo_dir=tmp_path)
    monkeypatch.setattr(difflab.zoo, "ZOO_DIR", tmp_path)
    result = CliRunner().invoke(
        app, ["generate", "a red circle", "--model", "shapes-t2i-lcm", "--steps", "4",
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (png,) = (tmp_path / "out").glob("*.png")
    settings = settings_from_png(png)
    assert (settings.sampler, settings.steps, settings.guidance) == ("lcm", 4, 5.0)


def test_progressive_student_folder_samples_ddim_on_its_trailing_grid(tiny_pipeline, tmp_path):
    from difflab.recipes.distill import PROGRESSIVE_DEFAULTS

    student = TextToImagePipeline(
        w_conditioned(), tiny_pipeline.vae, tiny_pipeline.prompt_encoder,
        make_schedule("scaled_linear", 1000, prediction_type="v_prediction", **SD),
        defaults={**PROGRESSIVE_DEFAULTS, "steps": 4},
    )  # fmt: skip
    student.save_pretrained(tmp_path)
    theirs = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert theirs.scheduler.config.timestep_spacing == "trailing"
    loaded = TextToImagePipeline.from_pretrained(tmp_path)
    seen = []
    loaded.latents("a red circle", callback=lambda s: seen.append(s.timestep))  # its 4 steps
    assert seen == timesteps(loaded.schedule, 4, "trailing").tolist()
    # DDIM is deterministic: plain diffusers gives the same latents where its DDIM step (t to
    # t - T/N) is the grid's, i.e. when N divides T
    reference = theirs("a red circle", num_inference_steps=4, guidance_scale=4.0,
                       generator=torch.Generator().manual_seed(0),
                       output_type="latent").images  # fmt: skip
    ours = loaded.latents("a red circle", steps=4, guidance=4.0, seed=0)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()


# ---- LCM-LoRA -----------------------------------------------------------------------------------


def trained_adapter(unet):
    """A copy of ``unet`` with a rank-4 LoRA whose B is not zero (as after training; B starts at
    zero)."""
    import copy

    adapted = add_lora(copy.deepcopy(unet), rank=4)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return adapted


@pytest.mark.parametrize("fuse", [False, True])
def test_lcm_lora_loads_changes_the_model_and_unloads_to_the_teacher_exactly(
    tiny_pipeline, tmp_path, fuse
):
    """Unfused (LoRA branches beside the layers) or fused into the weights, the loaded adapter
    computes what was trained, and unloading gives the teacher back bit for bit."""
    import copy

    adapted = trained_adapter(tiny_pipeline.unet)
    save_lora(adapted, tmp_path / "lora", {"sampling": {**LCM_DEFAULTS, "guidance": 1.0}})
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == [
        "difflab_lora.json", "pytorch_lora_weights.safetensors",
    ]  # fmt: skip
    pipe = TextToImagePipeline(
        copy.deepcopy(tiny_pipeline.unet), tiny_pipeline.vae, tiny_pipeline.prompt_encoder,
        tiny_pipeline.schedule,
    )  # fmt: skip
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    teacher = pipe.latents("a red circle", steps=4, guidance=3.0, sampler="ddim", seed=1)
    load_lcm_lora(pipe, tmp_path / "lora", fuse=fuse)
    assert pipe.sampling_settings()[:2] == ("lcm", 1.0)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([5, 900]), torch.randn(2, 32, 384)
    with torch.no_grad():
        loaded_out = call_denoiser(pipe.unet, x, t, encoder_hidden_states=context)
        trained_out = call_denoiser(adapted, x, t, encoder_hidden_states=context)
    # the stored adapter is the trained one (fused: to the rounding of W + BA)
    assert torch.allclose(loaded_out, trained_out, atol=1e-5 if fuse else 1e-6)
    merged = {k: v for k, v in pipe.unet.state_dict().items() if "base_layer" in k}
    changed = any(
        not torch.equal(v, before[k.replace(".base_layer", "")]) for k, v in merged.items()
    )
    assert merged and changed == fuse  # fusing changes the stored weights, unfused leaves them
    with_lora = pipe.latents("a red circle", steps=4, guidance=3.0, sampler="ddim", seed=1)
    assert not torch.allclose(with_lora, teacher, atol=1e-4)
    unload_lcm_lora(pipe)
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    again = pipe.latents("a red circle", steps=4, guidance=3.0, sampler="ddim", seed=1)
    assert torch.equal(again, teacher) and pipe.defaults == {}
    with pytest.raises(ValueError, match="no LoRA is loaded"):
        unload_lcm_lora(pipe)
    with pytest.raises(FileNotFoundError, match="not an LCM-LoRA folder"):
        load_lcm_lora(pipe, tmp_path)


def test_ema_target_network_update():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    module = ConsistencyDistillation(w_conditioned(), schedule, target_decay=0.95)
    target = module.target.time_embedding.cond_proj.weight
    assert torch.equal(target, module.student.time_embedding.cond_proj.weight)
    before = target.clone()
    with torch.no_grad():
        module.student.time_embedding.cond_proj.weight.add_(1.0)
    module.after_optimizer_step()
    assert torch.allclose(target, before + 0.05, atol=1e-6) and int(module.num_updates) == 1
    assert not target.requires_grad


def test_consistency_loss_needs_a_known_loss_and_decay():
    schedule = make_schedule("scaled_linear", 1000, **SD)
    with pytest.raises(ValueError, match="unknown consistency loss 'l3'"):
        ConsistencyDistillation(tiny_unet(), schedule, loss="l3")
    with pytest.raises(ValueError, match=r"target decay mu must lie in \[0, 1\)"):
        ConsistencyDistillation(tiny_unet(), schedule, target_decay=1.0)


def test_q_sample_is_the_ddim_step_of_the_exact_denoiser():
    """Consistency training's target point (Song et al. 2023, Alg. 3) is one DDIM step with
    the true (x0, noise): both are q_sample."""
    schedule = make_schedule("scaled_linear", 1000, **SD)
    x0, noise = start(1), start(2)
    t, t_next = torch.full((3,), 600), torch.full((3,), 580)
    z = q_sample(x0, t, schedule, noise)

    def exact(x, s):  # the eps that this sample was made with
        return noise

    assert torch.allclose(samplers.ddim_step(exact, schedule, z, t, t_next),
                          q_sample(x0, t_next, schedule, noise), atol=1e-12)  # fmt: skip


def test_shipped_lcm_lora_generates_on_its_teacher_and_replays(
    tiny_pipeline, tmp_path, monkeypatch
):
    """A LoRA shipped in fp16 next to its teacher: `difflab models` lists it, `difflab generate
    --lora NAME` loads the recorded teacher with the adapter's sampler and guidance, the PNG
    records the adapter and `--from-png` replays it bit for bit."""
    from safetensors import safe_open
    from typer.testing import CliRunner

    import difflab.zoo
    from difflab.cli import app
    from difflab.distill.lora import LORA_WEIGHTS
    from difflab.generate import settings_from_png

    adapted = trained_adapter(tiny_pipeline.unet)
    sampling = {**LCM_DEFAULTS, "guidance": 1.0, "steps": 4}
    settings = {"teacher": "tiny-teacher", "sampling": sampling}
    difflab.zoo.ship(tiny_pipeline, "tiny-teacher", "# teacher\n", zoo_dir=tmp_path)
    folder = difflab.zoo.ship_lora(adapted, "tiny-lcm-lora", settings, "# LoRA\n", tmp_path)
    with safe_open(folder / LORA_WEIGHTS, "pt") as stored:
        assert {stored.get_tensor(k).dtype for k in stored.keys()} == {torch.float16}
    assert (folder / "MODEL_CARD.md").read_text() == "# LoRA\n"
    monkeypatch.setattr(difflab.zoo, "ZOO_DIR", tmp_path)
    assert difflab.zoo.list_loras() == {"tiny-lcm-lora": folder}
    assert difflab.zoo.lora_teacher("tiny-lcm-lora") == "tiny-teacher"
    assert "tiny-lcm-lora" not in difflab.zoo.list_models()
    loaded = difflab.zoo.load_pipeline("tiny-teacher", lora="tiny-lcm-lora")
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([5, 900]), torch.randn(2, 32, 384)
    with torch.no_grad():  # the fp16 copy computes what the trained adapter does, to fp16 rounding
        difference = call_denoiser(loaded.unet, x, t, encoder_hidden_states=context) - (
            call_denoiser(adapted, x, t, encoder_hidden_states=context)
        )
    assert difference.abs().max() < 1e-3
    runner = CliRunner()
    listing = runner.invoke(app, ["models"])
    assert "LoRA adapters" in listing.output and "tiny-lcm-lora" in listing.output
    out = tmp_path / "out"
    result = runner.invoke(  # no --steps: the adapter's 4
        app, ["generate", "a red circle", "--lora", "tiny-lcm-lora", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (png,) = out.glob("*.png")
    recorded = settings_from_png(png)
    assert (recorded.model, recorded.lora, recorded.sampler, recorded.guidance) == (
        "tiny-teacher", "tiny-lcm-lora", "lcm", 1.0,
    )  # fmt: skip
    assert recorded.steps == 4
    replay = runner.invoke(app, ["generate", "--from-png", str(png), "--out", str(tmp_path / "r")])
    assert replay.exit_code == 0, replay.output
    (again,) = (tmp_path / "r").glob("*.png")
    with Image.open(png) as first, Image.open(again) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))
    without = runner.invoke(app, ["generate", "a red circle", "--model", "tiny-teacher",
                                  "--steps", "4", "--sampler", "lcm", "--guidance", "1",
                                  "--out", str(tmp_path / "w")])  # fmt: skip
    assert without.exit_code == 0, without.output
    (plain,) = (tmp_path / "w").glob("*.png")
    with Image.open(png) as first, Image.open(plain) as second:
        assert not np.array_equal(np.asarray(first), np.asarray(second))  # the adapter acted
    from difflab.eval.shapes import load_suite

    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps(load_suite()[0]) + "\n")
    report = tmp_path / "lora.json"
    scored = runner.invoke(app, ["eval", "shapes", "--lora", "tiny-lcm-lora", "--prompts",
                                 str(suite), "--images-per-prompt", "1", "--out", str(report)])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    generation = json.loads(report.read_text())["generation"]
    assert generation == {"model": "tiny-teacher", "lora": "tiny-lcm-lora", "images_per_prompt": 1,
                          "steps": 4, "sampler": "lcm", "guidance": 1.0, "seed": 0,
                          "guidance_interval": "all"}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="shipped LoRA adapters: tiny-lcm-lora"):
        difflab.zoo.load_pipeline("tiny-teacher", lora="no-such-lora")
    other = TextToImagePipeline(
        text_conditional_unet(block_out_channels=(16, 32), attention_head_dim=4, norm_num_groups=8),
        tiny_pipeline.vae, tiny_pipeline.prompt_encoder, tiny_pipeline.schedule,
    )  # fmt: skip
    with pytest.raises(ValueError, match="does not fit this model's U-Net .*from tiny-teacher"):
        load_lcm_lora(other, folder)
