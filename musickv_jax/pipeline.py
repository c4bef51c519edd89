"""The user-facing Python API: text in, audio out.

  model = load_model("ckpt/sao")
  result = generate(model, GenerationSettings(prompts=("Piano solo",), audio_end_in_s=10, seed=0))
  result.audio  # (n_prompts, channels, samples) float32 at result.sample_rate
  edit(model, EditSettings(...)); invert_audio(...) + edit_recording(...) for MusicKV editing

Follows the reference pipelines (diffusers StableAudioPipeline): T5 + seconds conditioning,
CFG batch [uncond; cond] with an all-zero unconditional context (or the negative prompt),
the model's full latent window by default, decoded and trimmed to [start, end].
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax import vae_ops
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ConditionerConfig, ModelConfig, T5Config
from musickv_jax.models.conditioning import Conditioner, Conditioning
from musickv_jax.models.t5 import T5Encoder
from musickv_jax.sampling import guided, sampler, schedules, solvers
from musickv_jax.text import tokenize

LATENT_LENGTHS = ("full", "fit")
FIT_BUCKET_FRAMES = 64  # `fit` rounds the latent length up to a multiple of this (few compiled shapes)


class GenerationError(ValueError):
  """A generation request that cannot be served; the message names the problem and the fix."""


# ----------------------------------------------------------------------------- conditioning


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_text(params, ids, mask, *, config: T5Config):
  return T5Encoder(config).apply({"params": params}, ids, mask)


@functools.partial(jax.jit, static_argnames=("config",))
def _condition(params, text_hidden, mask, seconds_start, seconds_total, *, config: ConditionerConfig):
  return Conditioner(config).apply({"params": params}, text_hidden, mask, seconds_start, seconds_total)


def text_conditioning(model: LoadedModel, prompts: Sequence[str], seconds_start: float,
                      seconds_total: float) -> Conditioning:
  """Prompts + seconds -> Conditioning (n, ...): T5, projection, padding zeroed, seconds tokens."""
  cfg = model.config
  ids, mask = tokenize(model.tokenizer, list(prompts), cfg.t5.max_length)
  hidden = _encode_text(model.params["t5"], jnp.asarray(ids), jnp.asarray(mask), config=cfg.t5)
  n = len(prompts)
  return _condition(model.params["conditioner"], hidden, jnp.asarray(mask),
                    jnp.full((n,), seconds_start, jnp.float32), jnp.full((n,), seconds_total, jnp.float32),
                    config=cfg.conditioner)


def guided_conditioning(model: LoadedModel, prompts: Sequence[str], *, negative_prompt: str | None,
                        seconds_start: float, seconds_total: float, guidance: np.ndarray,
                        use_cfg: bool) -> guided.GuidedConditioning:
  """Rows [uncond; cond] (or [cond]). The unconditional context is all zeros (text and seconds
  tokens) with the real global vector, or the negative prompt's tokens with the same seconds."""
  cond = text_conditioning(model, prompts, seconds_start, seconds_total)
  guidance = jnp.asarray(guidance, jnp.float32)
  if not use_cfg:
    return guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, guidance)
  if negative_prompt is None:
    uncond = Conditioning(jnp.zeros_like(cond.cross_tokens), cond.global_cond)
  else:
    uncond = text_conditioning(model, [negative_prompt] * len(prompts), seconds_start, seconds_total)
  return guided.GuidedConditioning(
      cross_tokens=jnp.concatenate([uncond.cross_tokens, cond.cross_tokens]),
      global_cond=jnp.concatenate([uncond.global_cond, cond.global_cond]), guidance=guidance)


# ----------------------------------------------------------------------------- requests


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """Every setting that decides a generation (the sidecar JSON holds exactly these)."""

  prompts: tuple[str, ...]
  negative_prompt: str | None = None
  audio_start_in_s: float = 0.0
  audio_end_in_s: float | None = None  # None: the model's maximum
  num_inference_steps: int = 100
  guidance_scale: float = 7.0
  sampler: str = "dpmpp-2m"
  sigma_schedule: str = "exponential"
  sigma_min: float = schedules.SIGMA_MIN
  sigma_max: float = schedules.SIGMA_MAX
  seed: int = 0
  latent_length: str = "full"
  noise_convention: str = "diffusers"  # x_T = noise * sqrt(sigma_max^2 + 1)

  def resolved_end(self, config: ModelConfig) -> float:
    return config.max_audio_seconds if self.audio_end_in_s is None else float(self.audio_end_in_s)


def validate(settings: GenerationSettings, config: ModelConfig) -> None:
  """Raises GenerationError for a request the model cannot serve, before any work is done."""
  if not settings.prompts:
    raise GenerationError("no prompts given; pass at least one with --prompts")
  for i, prompt in enumerate(settings.prompts):
    if not prompt.strip():
      raise GenerationError(f"prompt {i + 1} is empty; every prompt needs text")
  if settings.num_inference_steps < 1:
    raise GenerationError(f"--num_inference_steps must be at least 1, got {settings.num_inference_steps}")
  try:
    solvers.check_solver(settings.sampler)
  except ValueError as e:
    raise GenerationError(str(e)) from None
  if settings.sigma_schedule not in schedules.SCHEDULES:
    raise GenerationError(f"unknown sigma schedule {settings.sigma_schedule!r}; use one of {schedules.SCHEDULES}")
  if settings.latent_length not in LATENT_LENGTHS:
    raise GenerationError(f"--latent_length must be one of {LATENT_LENGTHS}, got {settings.latent_length!r}")
  if not math.isfinite(settings.guidance_scale):
    raise GenerationError(f"--guidance_scale must be a finite number, got {settings.guidance_scale}")
  start, end, maximum = settings.audio_start_in_s, settings.resolved_end(config), config.max_audio_seconds
  if start < 0:
    raise GenerationError(f"--audio_start_in_s must be >= 0, got {start}")
  if end <= start:
    raise GenerationError(f"--audio_end_in_s ({end}) must be greater than --audio_start_in_s ({start})")
  if end > maximum + 1e-6:
    raise GenerationError(f"--audio_end_in_s {end:g} s is longer than the model's maximum of {maximum:.2f} s; "
                          f"ask for at most {maximum:.2f} s")
  lo, hi = config.conditioner.seconds_min, config.conditioner.seconds_max
  if not (lo <= start <= hi and lo <= end <= hi):
    raise GenerationError(f"seconds must lie in the conditioner's range [{lo:g}, {hi:g}]")


def latent_frames(settings: GenerationSettings, config: ModelConfig) -> int:
  """full: the model's window (what the references do); fit: just enough for audio_end_in_s,
  rounded up to a multiple of FIT_BUCKET_FRAMES."""
  if settings.latent_length == "full":
    return config.dit.sample_size
  needed = math.ceil(settings.resolved_end(config) * config.sample_rate / config.vae.hop_length)
  return min(config.dit.sample_size, FIT_BUCKET_FRAMES * math.ceil(needed / FIT_BUCKET_FRAMES))


def initial_latents(settings: GenerationSettings, config: ModelConfig, n: int, frames: int) -> jax.Array:
  """Unit Gaussian noise from the seed, one independent draw per prompt, scaled to sigma_max."""
  noise = jax.random.normal(jax.random.key(settings.seed), (n, config.dit.io_channels, frames), jnp.float32)
  return noise * schedules.init_noise_scale(settings.sigma_max, settings.noise_convention)


def check_init_latents(latents: np.ndarray, n: int, settings: GenerationSettings, config: ModelConfig, *,
                       require_coverage: bool = True) -> None:
  expected_channels = config.dit.io_channels
  if latents.ndim != 3 or latents.shape[0] != n or latents.shape[1] != expected_channels:
    raise GenerationError(f"--init_latents has shape {latents.shape}; expected ({n}, {expected_channels}, T) "
                          f"for {n} prompt(s)")
  frames = latents.shape[2]
  if frames > config.dit.sample_size:
    raise GenerationError(f"--init_latents has {frames} frames; the model takes at most {config.dit.sample_size}")
  covered = frames * config.vae.hop_length / config.sample_rate
  if require_coverage and settings.resolved_end(config) > covered + 1e-6:
    raise GenerationError(f"--init_latents covers {covered:.2f} s but --audio_end_in_s is "
                          f"{settings.resolved_end(config):g} s")
  if not np.all(np.isfinite(latents)):
    raise GenerationError("--init_latents contains NaN or infinite values")


def step_plan(settings: GenerationSettings) -> sampler.StepPlan:
  sigmas = schedules.sigma_schedule(settings.sigma_schedule, settings.num_inference_steps, settings.sigma_min,
                                    settings.sigma_max)
  return sampler.make_plan(sigmas, settings.sampler)


def trim(audio: np.ndarray, settings: GenerationSettings, config: ModelConfig) -> np.ndarray:
  """Cuts [start, end] out of decoded audio, by int() of the sample positions like diffusers."""
  begin = int(settings.audio_start_in_s * config.sample_rate)
  end = int(settings.resolved_end(config) * config.sample_rate)
  return audio[..., begin:end]


# ----------------------------------------------------------------------------- generation


@dataclasses.dataclass
class Generation:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed
  latents: np.ndarray  # (n, C, T) final latents
  sample_rate: int
  settings: GenerationSettings
  latent_frames: int


def generate(model: LoadedModel, settings: GenerationSettings, *, init_latents: np.ndarray | None = None,
             decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
             on_step: Callable[[int, int], None] | None = None) -> Generation:
  """Text-to-music: conditioning -> noise (or init_latents, used as given) -> sampler -> decode -> trim."""
  cfg = model.config
  validate(settings, cfg)
  n = len(settings.prompts)
  if init_latents is not None:
    init_latents = np.asarray(init_latents, np.float32)
    check_init_latents(init_latents, n, settings, cfg)
    x_init = jnp.asarray(init_latents)
  else:
    x_init = initial_latents(settings, cfg, n, latent_frames(settings, cfg))
  use_cfg = settings.guidance_scale != 1.0 or settings.negative_prompt is not None
  end = settings.resolved_end(cfg)
  cond = guided_conditioning(model, settings.prompts, negative_prompt=settings.negative_prompt,
                             seconds_start=settings.audio_start_in_s, seconds_total=end,
                             guidance=np.full((n,), settings.guidance_scale, np.float32), use_cfg=use_cfg)
  key = jax.random.fold_in(jax.random.key(settings.seed), 1)  # SDE noise, independent of x_T
  listener = on_step or (lambda step, total: None)
  with sampler.on_step(listener):
    latents, _ = guided.sample(model.params["dit"], cond, x_init, step_plan(settings), key, dit_config=cfg.dit,
                               solver=settings.sampler, use_cfg=use_cfg)
  latents = np.asarray(latents)
  audio = vae_ops.decode(model.params["vae"], latents, cfg.vae, decode_chunk_frames)
  return Generation(audio=trim(audio, settings, cfg), latents=latents, sample_rate=cfg.sample_rate,
                    settings=settings, latent_frames=int(x_init.shape[-1]))


# ----------------------------------------------------------------------------- editing (MusicKV)

REFERENCE_VITAL_LAYERS = (20, 3, 4)


@dataclasses.dataclass(frozen=True)
class EditSettings:
  """A MusicKV edit: prompt 0 is the source, the edits take its K/V in the vital layers.

  schedule: (steps, n_vital) or (steps, n_vital, n_edits) weights (see editing.schedules);
  None means the reference's time-varying ramp w_i = i / steps.
  """

  generation: GenerationSettings
  vital_layers: tuple[int, ...] = REFERENCE_VITAL_LAYERS
  skip_layers: tuple[int, ...] = ()
  schedule: np.ndarray | None = dataclasses.field(default=None, compare=False)
  injection_mode: str = "joint"
  edit_all: bool = False
  allow_unbounded_schedule: bool = False

  def resolved_schedule(self) -> np.ndarray:
    from musickv_jax.editing import schedules as kv_schedules
    steps = self.generation.num_inference_steps
    if self.schedule is None:
      return kv_schedules.linear_ramp(steps, len(self.vital_layers))
    return np.asarray(self.schedule, np.float32)


def _check_layers(layers: Sequence[int], depth: int, flag: str) -> None:
  for layer in layers:
    if not 0 <= layer < depth:
      raise GenerationError(f"--{flag}: layer {layer} is out of range; this model's layers are 0..{depth - 1}")
  duplicates = sorted({layer for layer in layers if list(layers).count(layer) > 1})
  if duplicates:
    raise GenerationError(f"--{flag}: layer(s) {duplicates} listed more than once")


def validate_edit(settings: EditSettings, config: ModelConfig) -> np.ndarray:
  """Raises GenerationError for an edit that cannot run; returns the validated schedule."""
  from musickv_jax.editing import injection
  from musickv_jax.editing import schedules as kv_schedules

  gen = settings.generation
  if len(gen.prompts) < 2:
    raise GenerationError("editing needs at least two prompts: the source description first, then the edit "
                          "(--prompts \"SOURCE\" \"EDIT\" [MORE ...])")
  validate(gen, config)
  if not settings.vital_layers:
    raise GenerationError("--vital_layers is empty; give at least one layer to inject into")
  _check_layers(settings.vital_layers, config.dit.depth, "vital_layers")
  _check_layers(settings.skip_layers, config.dit.depth, "skip_layers")
  if settings.injection_mode not in injection.MODES:
    raise GenerationError(f"--injection_mode must be one of {injection.MODES}, got {settings.injection_mode!r}")
  n_edits = len(gen.prompts) - 1 if settings.edit_all else 1
  try:
    return kv_schedules.validate(settings.resolved_schedule(), gen.num_inference_steps, len(settings.vital_layers),
                                 n_edits, allow_unbounded=settings.allow_unbounded_schedule)
  except kv_schedules.ScheduleError as e:
    raise GenerationError(str(e)) from None


@dataclasses.dataclass
class EditResult:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed; [source, edits / plain generations]
  latents: np.ndarray  # (n, C, T)
  roles: list[str]  # "source", "edit" or "plain" per prompt
  sample_rate: int
  settings: EditSettings
  schedule: np.ndarray
  latent_frames: int


def edit_initial_latents(settings: GenerationSettings, config: ModelConfig, n: int, frames: int) -> jax.Array:
  """One noise draw shared by every prompt (source and edits start from the same x_T), as the
  reference does, scaled to sigma_max."""
  one = initial_latents(settings, config, 1, frames)
  return jnp.tile(one, (n, 1, 1))


def edit(model: LoadedModel, settings: EditSettings, *, init_latents: np.ndarray | None = None,
         decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
         on_step: Callable[[int, int], None] | None = None, source_guidance: float | None = None,
         trim_samples: int | None = None) -> EditResult:
  """Generates the source (prompt 0) and the edits with MusicKV KV injection.

  source_guidance: the source's own guidance scale (real-audio edits use 1); default: the same
  as the edits. trim_samples: return the first trim_samples samples instead of [start, end]
  (real-audio edits return the recording's length)."""
  from musickv_jax.editing import injection

  cfg = model.config
  gen = settings.generation
  schedule = validate_edit(settings, cfg)
  n = len(gen.prompts)
  if init_latents is not None:
    init_latents = np.asarray(init_latents, np.float32)
    check_init_latents(init_latents, n, gen, cfg, require_coverage=trim_samples is None)
    x_init = jnp.asarray(init_latents)
  else:
    x_init = edit_initial_latents(gen, cfg, n, latent_frames(gen, cfg))
  guidance = np.full((n,), gen.guidance_scale, np.float32)
  if source_guidance is not None:
    guidance[0] = source_guidance
  use_cfg = bool(np.any(guidance != 1.0)) or gen.negative_prompt is not None
  layout = injection.EditLayout.reference(n, settings.edit_all, use_cfg)
  cond = guided_conditioning(model, gen.prompts, negative_prompt=gen.negative_prompt,
                             seconds_start=gen.audio_start_in_s, seconds_total=gen.resolved_end(cfg),
                             guidance=guidance, use_cfg=use_cfg)
  key = jax.random.fold_in(jax.random.key(gen.seed), 1)
  plan = step_plan(gen)
  layers, skips = tuple(settings.vital_layers), tuple(settings.skip_layers)
  listener = on_step or (lambda step, total: None)
  steps = gen.num_inference_steps
  sample = functools.partial(guided.sample, model.params["dit"], dit_config=cfg.dit, solver=gen.sampler,
                             use_cfg=use_cfg)
  if settings.injection_mode == "joint":
    kv = injection.joint_steps(schedule, layers, cfg.dit, layout, skips)
    with sampler.on_step(lambda step, total: listener(step, steps)):
      latents, _ = sample(cond, x_init, plan, key, kv)
  else:  # progress runs over both passes
    with sampler.on_step(lambda step, total: listener(step, 2 * steps)):
      source, cache = injection.record_source(model.params["dit"], injection.take_prompts(cond, [0], n, use_cfg),
                                              x_init[:1], plan, key, layers, dit_config=cfg.dit,
                                              solver=gen.sampler, use_cfg=use_cfg, skip_layers=skips)
    edit_layout = injection.EditLayout(n - 1, tuple(p - 1 for p in layout.edits), use_cfg)
    kv = injection.cached_steps(schedule, cache, cfg.dit, edit_layout, skips)
    with sampler.on_step(lambda step, total: listener(steps + step, 2 * steps)):
      others, _ = sample(injection.take_prompts(cond, list(range(1, n)), n, use_cfg), x_init[1:], plan, key, kv,
                         jnp.arange(1, n))
    latents = jnp.concatenate([source, others])
  latents = np.asarray(latents)
  audio = vae_ops.decode(model.params["vae"], latents, cfg.vae, decode_chunk_frames)
  roles = ["source"] + ["edit" if p in layout.edits else "plain" for p in range(1, n)]
  audio = trim(audio, gen, cfg) if trim_samples is None else audio[..., :trim_samples]
  return EditResult(audio=audio, latents=latents, roles=roles, sample_rate=cfg.sample_rate,
                    settings=settings, schedule=schedule, latent_frames=int(x_init.shape[-1]))


# ----------------------------------------------------------------------------- real audio


@dataclasses.dataclass(frozen=True)
class InversionSettings:
  """How a recording is inverted. The reference inverts with the source description, no guidance
  (scale 1), 100 deterministic DPM-Solver++(2M) steps, seconds_total = the model's maximum."""

  prompt: str
  num_inference_steps: int = 100
  variant: str = "reference"  # or "consistent"
  order: int = 2  # 1: first-order (DDIM-like)
  seconds_total: float | None = None  # None: the model's maximum, as the reference
  sample_latent: bool = False  # encode with a sample of the posterior instead of its mean
  seed: int = 0  # for sample_latent
  sigma_schedule: str = "exponential"
  sigma_min: float = schedules.SIGMA_MIN
  sigma_max: float = schedules.SIGMA_MAX


@dataclasses.dataclass
class Inversion:
  inverted: np.ndarray  # (1, C, T): the latent at sigma_max, x_T for the edit (used as given)
  encoded: np.ndarray | None  # (1, C, T): the clean latent of the recording (None if only x_T was saved)
  n_samples: int  # the recording's length at the model's sample rate
  settings: InversionSettings
  kv: object | None = None  # KVCache of the vital layers over inversion steps (conditional row), or None


def encode_audio(model: LoadedModel, audio: np.ndarray, *, sample: bool = False, seed: int = 0) -> jax.Array:
  """(channels, samples) audio at the model's rate -> latents (1, C, T): the VAE posterior mean
  (deterministic) or a sample from it. The audio is zero-padded to whole VAE hops."""
  from musickv_jax.audio import pad_to_hop

  cfg = model.config
  padded = pad_to_hop(np.asarray(audio, np.float32), cfg.vae.hop_length)[None]
  dist = vae_ops.encode(model.params["vae"], padded, cfg.vae)
  return dist.sample(jax.random.key(seed)) if sample else dist.mean


def validate_inversion(settings: InversionSettings, config: ModelConfig, frames: int) -> None:
  from musickv_jax.sampling import inversion as inv
  if not settings.prompt.strip():
    raise GenerationError("the source description (the first prompt) is empty; describe the recording")
  if settings.num_inference_steps < 1:
    raise GenerationError(f"--num_inference_steps must be at least 1, got {settings.num_inference_steps}")
  if settings.variant not in inv.VARIANTS:
    raise GenerationError(f"--inversion must be one of {inv.VARIANTS}, got {settings.variant!r}")
  if settings.order not in (1, 2):
    raise GenerationError(f"--inversion_order must be 1 or 2, got {settings.order}")
  if frames > config.dit.sample_size:
    raise GenerationError(f"the recording needs {frames} latent frames; the model takes at most "
                          f"{config.dit.sample_size} ({config.max_audio_seconds:.2f} s)")
  total = config.max_audio_seconds if settings.seconds_total is None else settings.seconds_total
  lo, hi = config.conditioner.seconds_min, config.conditioner.seconds_max
  if not lo <= total <= hi:
    raise GenerationError(f"seconds_total {total:g} is outside the conditioner's range [{lo:g}, {hi:g}]")


def invert_latents(model: LoadedModel, latents, settings: InversionSettings, *,
                   record_layers: tuple[int, ...] = (),
                   on_step: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, object]:
  """Clean latents (1, C, T) -> (latent at sigma_max, recorded K/V or None)."""
  from musickv_jax.sampling import inversion as inv

  cfg = model.config
  validate_inversion(settings, cfg, int(np.shape(latents)[-1]))
  total = cfg.max_audio_seconds if settings.seconds_total is None else settings.seconds_total
  cond = text_conditioning(model, [settings.prompt], 0.0, total)
  plan = inv.make_inversion_plan(settings.num_inference_steps, variant=settings.variant, order=settings.order,
                                 sigma_min=settings.sigma_min, sigma_max=settings.sigma_max,
                                 schedule=settings.sigma_schedule)
  guided_cond = guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, jnp.ones((1,), jnp.float32))
  with sampler.on_step(on_step or (lambda step, total: None)):
    inverted, kv = inv.invert(model.params["dit"], guided_cond, jnp.asarray(latents, jnp.float32), plan,
                              dit_config=cfg.dit, record_layers=tuple(record_layers))
  return np.asarray(inverted), kv


def invert_audio(model: LoadedModel, audio: np.ndarray, settings: InversionSettings, *,
                 record_layers: tuple[int, ...] = (),
                 on_step: Callable[[int, int], None] | None = None) -> Inversion:
  """A recording (channels, samples) at the model's rate -> its inverted latent."""
  encoded = encode_audio(model, audio, sample=settings.sample_latent, seed=settings.seed)
  inverted, kv = invert_latents(model, encoded, settings, record_layers=record_layers, on_step=on_step)
  return Inversion(inverted=inverted, encoded=np.asarray(encoded), n_samples=int(np.shape(audio)[-1]),
                   settings=settings, kv=kv)


def edit_recording(model: LoadedModel, inversion: Inversion, settings: EditSettings, *,
                   kv_from_inversion: bool = False, decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
                   on_step: Callable[[int, int], None] | None = None) -> EditResult:
  """Edits an inverted recording. Prompt 0 describes the recording (the source); every prompt
  starts from the inverted latent; the source is denoised with guidance 1 (its reconstruction),
  the edits with the settings' guidance and KV injection from the source.

  kv_from_inversion: take the source K/V recorded during inversion (Inversion.kv, same steps and
  vital layers) instead of re-running the source branch: the source is not regenerated (roles
  and audio then cover the other prompts only)."""
  gen = settings.generation
  n = len(gen.prompts)
  x_init = np.repeat(inversion.inverted, n, axis=0)
  if not kv_from_inversion:
    return edit(model, settings, init_latents=x_init, source_guidance=1.0, trim_samples=inversion.n_samples,
                decode_chunk_frames=decode_chunk_frames, on_step=on_step)
  return _edit_from_inversion_kv(model, inversion, settings, x_init[1:], decode_chunk_frames, on_step)


def _edit_from_inversion_kv(model, inversion, settings, x_init, decode_chunk_frames, on_step) -> EditResult:
  from musickv_jax.editing import injection
  from musickv_jax.models.dit import KVCache

  cfg = model.config
  gen = settings.generation
  schedule = validate_edit(settings, cfg)
  kv = inversion.kv
  if kv is None or tuple(kv.layers) != tuple(settings.vital_layers):
    raise GenerationError("the inversion recorded no K/V for these vital layers; invert with the same "
                          "--vital_layers (record_layers) to edit from the inversion's K/V")
  if kv.k.shape[0] != gen.num_inference_steps:
    raise GenerationError(f"the inversion ran {kv.k.shape[0]} steps but the edit asks for "
                          f"{gen.num_inference_steps}; use the same --num_inference_steps")
  n = len(gen.prompts)
  layout = injection.EditLayout.reference(n, settings.edit_all)
  use_cfg = gen.guidance_scale != 1.0 or gen.negative_prompt is not None
  # Inversion step i ran at the noise level of sampling step (steps - 1 - i): reverse the steps.
  cache = KVCache(kv.k[::-1], kv.v[::-1], tuple(kv.layers))
  edit_layout = injection.EditLayout(n - 1, tuple(p - 1 for p in layout.edits), use_cfg)
  steps = injection.cached_steps(schedule, cache, cfg.dit, edit_layout, tuple(settings.skip_layers))
  cond = guided_conditioning(model, gen.prompts[1:], negative_prompt=gen.negative_prompt,
                             seconds_start=gen.audio_start_in_s, seconds_total=gen.resolved_end(cfg),
                             guidance=np.full((n - 1,), gen.guidance_scale, np.float32), use_cfg=use_cfg)
  listener = on_step or (lambda step, total: None)
  with sampler.on_step(listener):
    latents, _ = guided.sample(model.params["dit"], cond, jnp.asarray(x_init), step_plan(gen),
                               jax.random.fold_in(jax.random.key(gen.seed), 1), steps, jnp.arange(1, n),
                               dit_config=cfg.dit, solver=gen.sampler, use_cfg=use_cfg)
  latents = np.asarray(latents)
  audio = vae_ops.decode(model.params["vae"], latents, cfg.vae, decode_chunk_frames)[..., :inversion.n_samples]
  roles = ["edit" if p in layout.edits else "plain" for p in range(1, n)]
  return EditResult(audio=audio, latents=latents, roles=roles, sample_rate=cfg.sample_rate, settings=settings,
                    schedule=schedule, latent_frames=int(x_init.shape[-1]))
