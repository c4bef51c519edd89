"""MusicKV editing: parity with a PyTorch reference of the KV blend, the method's properties,
joint == cached, differentiability, and schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musickv_jax import pipeline
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import kv_schedules as kv
from musickv_jax.sampling import kv as kv_lib
from musickv_jax.pipeline import EditSettings, GenerationSettings
from musickv_jax.sampling import guided, schedules
from tests.parity import max_error_ratio
from tests.reference import KVBlendProcessor
from tests import tolerances
from tests.test_sampler import edm_scheduler

STEPS, END = 8, 3.0


def run_to_run(model, latents, guidance: float = 7.0) -> float:
  """The derived float32 bound (tests/tolerances.py) for two runs that round in different orders,
  in units of the largest latent."""
  return tolerances.run_to_run(model.config.dit, latents.shape[-1], model.config.t5.max_length + 2, guidance) \
      * float(np.abs(latents).max())


def reference_weight(schedule_name: str, step: int, steps: int) -> float:
  """MusicKV's injection weight at a step, computed here from the method's definition (not from
  our schedule arrays): the time-varying schedule is w_i = i / steps (0 at the first, noisiest
  step); without time variation the source's K/V replace the edit's (w = 1)."""
  return step / steps if schedule_name == "linear_ramp" else 1.0


def torch_edit(ref, prompts, noise, layers, schedule_name, guidance=7.0, start=0.0):
  """diffusers' StableAudioPipeline with the deterministic DPM-Solver++(2M), KV-blending
  processors in the vital layers, and the weights changed before every step (step callback)."""
  pipe, dit = ref.pipeline, ref.dit
  n = len(prompts)
  processors = {layer: KVBlendProcessor() for layer in layers}

  def set_step(step):
    w = reference_weight(schedule_name, step, STEPS)
    for layer in layers:
      processors[layer].blends = [(1, 0, w), (n + 1, n, w)]  # uncond edit <- uncond source; cond <- cond

  default = dit.attn_processors
  for layer, proc in processors.items():
    dit.transformer_blocks[layer].attn1.set_processor(proc)
  original = pipe.scheduler
  pipe.scheduler = edm_scheduler(STEPS)
  set_step(0)
  try:
    with torch.no_grad():
      out = pipe(prompts, audio_start_in_s=start, audio_end_in_s=END, num_inference_steps=STEPS,
                 guidance_scale=guidance, latents=torch.from_numpy(noise), output_type="latent",
                 callback=lambda i, t, latents: set_step(min(i + 1, STEPS - 1)), callback_steps=1).audios
  finally:
    pipe.scheduler = original
    dit.set_attn_processor(default)
  return out.numpy()


def settings_for(prompts, layers, schedule=None, **kw):
  return EditSettings(generation=GenerationSettings(prompts=tuple(prompts), num_inference_steps=STEPS,
                                                    audio_end_in_s=END, **kw.pop("gen", {})),
                      vital_layers=tuple(layers), schedule=schedule, **kw)


def shared_noise(cfg, n, seed=0):
  one = np.random.default_rng(seed).normal(size=(1, cfg.dit.io_channels, cfg.dit.sample_size)).astype(np.float32)
  return np.repeat(one, n, axis=0)


@pytest.mark.parametrize("layers,schedule_name,start", [
    pytest.param((1,), "linear_ramp", 0.0, marks=pytest.mark.fast), ((0, 1), "linear_ramp", 0.0), ((1,), "constant", 0.0), ((0, 1), "constant", 0.0),
    ((0, 1), "linear_ramp", 0.75),  # a non-zero start: the seconds conditioning and the trimmed output
])
def test_edit_matches_pytorch_reference(tiny, layers, schedule_name, start):
  cfg = tiny.model.config
  prompts = ["piano solo", "acoustic guitar, country, soft"]
  schedule = kv.by_name(schedule_name, STEPS, len(layers))
  noise = shared_noise(cfg, 2)
  ours = pipeline.edit(tiny.model, settings_for(prompts, layers, schedule, gen={"audio_start_in_s": start}),
                       init_latents=noise * np.float32(schedules.init_noise_scale(500.0)))
  ref = torch_edit(tiny.ref, prompts, noise, layers, schedule_name, start=start)
  source_err, edit_err = max_error_ratio(ours.latents[0], ref[0]), max_error_ratio(ours.latents[1], ref[1])
  print(f"edit {schedule_name} layers {layers} start {start}: source {source_err:.1e}, edit {edit_err:.1e}")
  assert ours.audio.shape[-1] == int(END * cfg.sample_rate) - int(start * cfg.sample_rate)
  assert source_err < 1e-4 and edit_err < 1e-4
  assert ours.roles == ["source", "edit"]


@pytest.fixture(scope="module")
def plain_runs(tiny):
  cfg = tiny.model.config
  prompts = ("piano solo", "acoustic guitar, country, soft", "drums")
  x_init = shared_noise(cfg, 3) * np.float32(schedules.init_noise_scale(500.0))
  return prompts, x_init


def test_weight_zero_equals_plain_generation(tiny, plain_runs):
  """Weight 0 is exact (own + 0 * (source - own)): the edit row is the plain generation of its
  prompt in the same batch, bit for bit."""
  prompts, x_init = plain_runs
  edited = pipeline.edit(tiny.model, settings_for(prompts[:2], (0, 1), kv.constant(STEPS, 2, 0.0)),
                         init_latents=x_init[:2])
  plain = pipeline.generate(tiny.model, GenerationSettings(prompts=prompts[:2], num_inference_steps=STEPS,
                                                           audio_end_in_s=END), init_latents=x_init[:2])
  np.testing.assert_array_equal(edited.latents, plain.latents)


@pytest.mark.fast
def test_same_prompt_full_injection_equals_source(tiny, plain_runs):
  prompts, x_init = plain_runs
  out = pipeline.edit(tiny.model, settings_for((prompts[0], prompts[0]), (0, 1), kv.constant(STEPS, 2, 1.0)),
                      init_latents=x_init[:2])
  np.testing.assert_array_equal(out.latents[1], out.latents[0])


def test_injection_changes_only_the_edit(tiny, plain_runs):
  """Full injection in every layer changes the edit (and only the edit), yet does not turn it into
  the source: cross-attention still follows the edit prompt. (Whether it moves the edit *closer*
  to the source is a property of trained weights, not of a random tiny model.)"""
  prompts, x_init = plain_runs
  none = pipeline.edit(tiny.model, settings_for(prompts[:2], (0, 1), kv.constant(STEPS, 2, 0.0)),
                       init_latents=x_init[:2])
  full = pipeline.edit(tiny.model, settings_for(prompts[:2], (0, 1), kv.constant(STEPS, 2, 1.0)),
                       init_latents=x_init[:2])
  np.testing.assert_array_equal(full.latents[0], none.latents[0])
  assert not np.allclose(full.latents[1], none.latents[1])
  assert not np.allclose(full.latents[1], full.latents[0])


def test_source_is_bit_identical_with_and_without_injection(tiny, plain_runs):
  prompts, x_init = plain_runs
  with_kv = pipeline.edit(tiny.model, settings_for(prompts, (0, 1)), init_latents=x_init)
  without = pipeline.edit(tiny.model, settings_for(prompts, (0, 1), kv.constant(STEPS, 2, 0.0)), init_latents=x_init)
  np.testing.assert_array_equal(with_kv.latents[0], without.latents[0])
  np.testing.assert_array_equal(with_kv.latents[2], without.latents[2])  # prompt 3 is a plain generation
  assert with_kv.roles == ["source", "edit", "plain"]
  assert not np.array_equal(with_kv.latents[1], without.latents[1])


@pytest.mark.parametrize("edit_all", [False, True])
def test_joint_equals_cached(tiny, plain_runs, edit_all):
  prompts, x_init = plain_runs
  joint = pipeline.edit(tiny.model, settings_for(prompts, (1,), edit_all=edit_all), init_latents=x_init)
  cached = pipeline.edit(tiny.model, settings_for(prompts, (1,), edit_all=edit_all, injection_mode="cached"),
                         init_latents=x_init)
  np.testing.assert_allclose(cached.latents, joint.latents, rtol=0, atol=run_to_run(tiny.model, joint.latents))
  assert cached.roles == joint.roles == (["source", "edit", "edit"] if edit_all else ["source", "edit", "plain"])


def test_joint_equals_cached_with_the_sde_sampler(tiny, plain_runs):
  prompts, x_init = plain_runs
  kw = dict(gen={"sampler": "dpmpp-2m-sde"})
  joint = pipeline.edit(tiny.model, settings_for(prompts[:2], (1,), **dict(kw)), init_latents=x_init[:2])
  cached = pipeline.edit(tiny.model, settings_for(prompts[:2], (1,), injection_mode="cached", **dict(kw)),
                         init_latents=x_init[:2])
  np.testing.assert_allclose(cached.latents, joint.latents, rtol=0, atol=run_to_run(tiny.model, joint.latents))


def test_gradient_with_respect_to_the_schedule(tiny):
  """jax.grad of a scalar of the edit output w.r.t. the (steps, n_layers) weight array."""
  model, cfg = tiny.model, tiny.model.config
  cond = pipeline.guided_conditioning(model, ["piano solo", "acoustic guitar"], negative_prompt=None,
                                      seconds_start=0.0, seconds_total=END, guidance=np.full(2, 7.0), use_cfg=True)
  plan = pipeline.step_plan(GenerationSettings(prompts=("a",), num_inference_steps=4))
  x_init = jnp.asarray(shared_noise(cfg, 2) * schedules.init_noise_scale(500.0))

  def loss(schedule):
    weights = kv_lib.injection_weights(kv_lib.per_edit(schedule, 1), (0, 1), [-1, 0], cfg.dit.depth)
    steps = kv_lib.joint_controls(weights, np.zeros(2, np.int32), True, (0, 1), cfg.dit.depth)
    latents, _ = guided.sample(model.params.dit, cond, x_init, plan, jax.random.key(0), steps,
                               dit_config=cfg.dit, remat=True)
    return jnp.mean(jnp.square(latents[1] - latents[0]))

  grad = jax.grad(loss)(jnp.asarray(kv.linear_ramp(4, 2)))
  assert grad.shape == (4, 2)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_per_edit_schedules(tiny, plain_runs):
  """(steps, layers, n_edits): each edit gets its own schedule; equal to running them one by one."""
  prompts, x_init = plain_runs
  both = np.stack([kv.constant(STEPS, 1, 0.0), kv.constant(STEPS, 1, 1.0)], axis=-1)
  out = pipeline.edit(tiny.model, settings_for(prompts, (1,), both, edit_all=True), init_latents=x_init)
  zero = pipeline.edit(tiny.model, settings_for(prompts, (1,), kv.constant(STEPS, 1, 0.0), edit_all=True),
                       init_latents=x_init)
  one = pipeline.edit(tiny.model, settings_for(prompts, (1,), kv.constant(STEPS, 1, 1.0), edit_all=True),
                      init_latents=x_init)
  # the same batch and program, only the schedule data differs: the rows are the same bit for bit
  np.testing.assert_array_equal(out.latents[1], zero.latents[1])
  np.testing.assert_array_equal(out.latents[2], one.latents[2])


# ----------------------------------------------------------------------------- schedules and validation


@pytest.mark.fast
def test_schedule_builders():
  np.testing.assert_allclose(kv.linear_ramp(4, 2)[:, 0], [0, 0.25, 0.5, 0.75])
  np.testing.assert_allclose(kv.constant(3, 1, 0.4)[:, 0], [0.4] * 3)
  np.testing.assert_allclose(kv.cosine(4, 1)[:, 0], 0.5 * (1 - np.cos(np.pi * np.arange(4) / 4)), rtol=1e-6)
  np.testing.assert_allclose(kv.window(10, 1, 0.2, 0.5)[:, 0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
  stacked = kv.per_layer([kv.linear_ramp(5, 1), kv.constant(5, 1, 0.5)])
  assert stacked.shape == (5, 2) and stacked[0, 1] == 0.5


@pytest.mark.fast
def test_schedule_validation():
  with pytest.raises(kv.ScheduleError, match=r"shape \(5, 2\); expected \(8, 3\)"):
    kv.validate(np.zeros((5, 2)), 8, 3)
  with pytest.raises(kv.ScheduleError, match="NaN"):
    kv.validate(np.full((8, 3), np.nan), 8, 3)
  with pytest.raises(kv.ScheduleError, match=r"must lie in \[0, 1\].*set allow_unbounded_schedule"):
    kv.validate(np.full((8, 3), 1.5), 8, 3)
  kv.validate(np.full((8, 3), 1.5), 8, 3, allow_unbounded=True)
  with pytest.raises(kv.ScheduleError, match="unknown schedule 'ramp'"):
    kv.by_name("ramp", 4, 1)


@pytest.mark.fast
def test_edit_validation(tiny):
  cfg = tiny.model.config
  with pytest.raises(SettingsError, match="at least two prompts"):
    settings_for(["piano"], (0,)).validate(cfg)
  with pytest.raises(SettingsError, match=r"layer 20 is out of range; this model's layers are 0..1"):
    settings_for(["a", "b"], (20, 3, 4)).validate(cfg)
  with pytest.raises(SettingsError, match=r"^skip_layers: layer\(s\) \[1\] listed more than once"):
    settings_for(["a", "b"], (0,), skip_layers=(1, 1)).validate(cfg)
  with pytest.raises(SettingsError, match="prompt 2 is empty"):
    settings_for(["a", ""], (0,)).validate(cfg)
  with pytest.raises(SettingsError, match="schedule has shape"):
    settings_for(["a", "b"], (0,), np.zeros((3, 1))).validate(cfg)
  with pytest.raises(SettingsError, match=r"^skip_layers: layer 5 is out of range"):
    settings_for(["a", "b"], (0,), skip_layers=(5,)).validate(cfg)
  with pytest.raises(SettingsError, match="NaN"):
    settings_for(["a", "b"], (0,), np.full((STEPS, 1), np.nan)).validate(cfg)
  with pytest.raises(SettingsError, match="^injection_mode must be one of"):
    settings_for(["a", "b"], (0,), injection_mode="lazy").validate(cfg)
