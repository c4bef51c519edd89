"""Editing a recording: encode it with the VAE, then by the settings' method
  inversion  invert it to the model's initial-noise space and regenerate from there;
  sdedit     noise its latent to init_noise_level and sample from there (no inversion);
  flowedit   move its latent by the differences of the model's directions under the edit and the
             source prompts (sampling.flowedit; no inversion).
Prompt 0 describes the recording (the source); it is regenerated with guidance 1 (its
reconstruction; FlowEdit's source branch has the edit's guidance unless asked), the edits with the
settings' guidance and KV injection. Region edits paste the recording's latent back outside their
regions at every step (pipeline.regions).

An inversion can be saved (`inverted_latent.npy` with `inverted_latent.json` beside it) and
edited many times later: `load_inversion` reads and checks such a file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.audio import pad_to_hop
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.files import not_a_file
from musickv_jax.finite import require_finite
from musickv_jax.models import vae_ops
from musickv_jax.models.dit import KVCache
from musickv_jax.pipeline import common, long_recording, memory, variation
from musickv_jax.pipeline.conditioning import text_conditioning
from musickv_jax.pipeline.editing import sample_edit
from musickv_jax.pipeline.plan import build_plan, run_from_cache
from musickv_jax.pipeline.results import (
  EditResult,
  EncodedRecording,
  Inversion,
  Recording,
  edit_result,
  source_guidance,
)
from musickv_jax.pipeline.settings import EditSettings, InversionSettings, WindowSettings
from musickv_jax.sampling import guided
from musickv_jax.sampling import inversion as inversion_lib
from musickv_jax.sampling import kv as kv_lib
from musickv_jax.sampling import rows as rows_lib

# Progress of a phase ("inverting", "editing") over its steps: a context manager giving a listener.
PhaseProgress = Callable[[str, int], AbstractContextManager]


def encode_audio(model: LoadedModel, audio: np.ndarray, *, sample: bool = False, seed: int = 0) -> jax.Array:
  """(channels, samples) audio at the model's rate -> latents (1, C, T): the VAE posterior mean
  (deterministic) or a sample from it. The audio is zero-padded to whole VAE hops."""
  cfg = model.config
  padded = pad_to_hop(np.asarray(audio, np.float32), cfg.vae.hop_length)[None]
  dist = vae_ops.encode(model.params.vae, padded, cfg.vae)
  return dist.sample(jax.random.key(seed)) if sample else dist.mean


def invert_latents(model: LoadedModel, latents, settings: InversionSettings, *, record_layers: tuple[int, ...] = (),
                   on_step: common.Listener | None = None) -> tuple[np.ndarray, KVCache | None]:
  """Clean latents (1, C, T) -> (latent at sigma_max, recorded K/V or None)."""
  cfg = model.config
  frames = int(np.shape(latents)[-1])
  settings.validate(cfg, frames)
  cond = text_conditioning(model, [settings.prompt], 0.0, settings.resolved_total(cfg))
  guided_cond = guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, jnp.ones((1,), jnp.float32),
                                          cross_mask=cond.cross_mask)
  inverted, kv = inversion_lib.invert_in_chunks(model.params.dit, guided_cond, jnp.asarray(latents, jnp.float32),
                                                settings.plan(cfg, frames), dit_config=cfg.dit,
                                                record_layers=tuple(record_layers), on_step=on_step)
  return common.to_host(inverted), kv


def window_geometry(model: LoadedModel, n_samples: int, windows: WindowSettings | None) -> WindowSettings | None:
  """The windows a recording of n_samples is covered by (None: it fits one window)."""
  windows = windows or WindowSettings()
  windows.validate(model.config)
  return windows if windows.needs_windows(model.config, model.config.frames_for_samples(n_samples)) else None


def check_inversion(model: LoadedModel, n_samples: int, settings: InversionSettings, windows: WindowSettings | None,
                    record_layers: tuple[int, ...] = ()) -> WindowSettings | None:
  """Raises SettingsError, before any work, for an inversion that cannot run; returns the windows
  of a recording longer than one window (None for one that fits)."""
  cfg = model.config
  geometry = window_geometry(model, n_samples, windows)
  if geometry is None:
    settings.validate(cfg, cfg.frames_for_samples(n_samples))
    return None
  long_recording.check_recording(cfg, n_samples, geometry)
  settings.validate(cfg)
  if settings.seconds_total is not None:
    raise SettingsError("{field} does not apply to a recording longer than one window (each window is "
                        "conditioned on its start and the recording's length); leave it out", field="seconds_total")
  if record_layers:
    raise SettingsError("K/V cannot be recorded while inverting a recording longer than one window; edit it "
                        "without {field}", field="kv_from_inversion")
  return geometry


def invert_audio(model: LoadedModel, audio: np.ndarray, settings: InversionSettings, *,
                 record_layers: tuple[int, ...] = (), windows: WindowSettings | None = None,
                 on_step: common.Listener | None = None) -> Inversion:
  """A recording (channels, samples) at the model's rate -> its inverted latent. A recording longer
  than one window (`windows`, default: the model's window) is inverted over overlapping windows
  (pipeline.long_recording)."""
  n_samples = int(np.shape(audio)[-1])
  settings = settings.for_model(model.config)
  geometry = check_inversion(model, n_samples, settings, windows, tuple(record_layers))
  if geometry is None and model.config.variable_length:  # conditioned on the recording's own duration
    settings = dataclasses.replace(settings, seconds_total=common.recording_seconds(model.config, n_samples,
                                                                                     settings.seconds_total))
  encoded = np.asarray(encode_audio(model, audio, sample=settings.sample_latent, seed=settings.seed))
  require_finite(encoded, stage="encoding", what="latents of the recording")
  if geometry is not None:
    inverted = long_recording.invert_latents(model, encoded, settings, geometry, n_samples, on_step=on_step)
    kv = None
  else:
    inverted, kv = invert_latents(model, encoded, settings, record_layers=record_layers, on_step=on_step)
  require_finite(inverted, stage="inversion", what="inverted latents")
  return Inversion(inverted=inverted, encoded=encoded, n_samples=n_samples, settings=settings, kv=kv,
                   windows=geometry)


def check_edit(model: LoadedModel, settings: EditSettings, n_samples: int, windows: WindowSettings | None, *,
               kv_from_inversion: bool = False) -> None:
  """Raises SettingsError, before any work (an inversion costs as much as an edit), for an edit of
  a recording of n_samples over `windows` (its inversion's geometry, None: one window) that
  cannot run."""
  settings.validate(model.config)
  if kv_from_inversion and settings.method != "inversion":
    raise SettingsError(f"{{field}} reads the K/V an inversion recorded; the {settings.method} method inverts "
                        "nothing: leave it out", field="kv_from_inversion")
  if windows is None:
    gen = settings.generation
    memory.check_run(model, settings, model.config.frames_for_samples(n_samples),
                     rows_lib.uses_cfg([gen.guidance_scale], gen.negative_prompt), kv_from_inversion=kv_from_inversion)
    return
  if kv_from_inversion:
    raise SettingsError("a recording longer than one window is edited by regenerating its source: leave out {field} "
                        "(the K/V of every window and step would not fit)", field="kv_from_inversion")
  long_recording.check_edit(model, settings, windows, n_samples)


def encode_recording(model: LoadedModel, audio: np.ndarray, settings: EditSettings,
                     windows: WindowSettings | None = None) -> EncodedRecording:
  """A recording (channels, samples) at the model's rate made ready for an edit that inverts
  nothing (settings.method flowedit or sdedit): its latent, and SDEdit's start, the latent noised
  to init_noise_level with noise from the seed (pipeline.variation). A recording longer than one
  window is covered by `windows` (default: the model's window)."""
  cfg = model.config
  settings = settings.for_recording(cfg)
  n_samples = int(np.shape(audio)[-1])
  geometry = window_geometry(model, n_samples, windows)
  encoded = np.asarray(encode_audio(model, audio))
  require_finite(encoded, stage="encoding", what="latents of the recording")
  start = encoded
  if settings.method == "sdedit":
    gen = settings.generation
    start = variation.noised(cfg, encoded, variation.unit_noise(gen, cfg, 1, int(encoded.shape[-1])), gen)
  return EncodedRecording(encoded=encoded, start=start, n_samples=n_samples, method=settings.method,
                          windows=geometry)


def region_reference(recording: Recording, settings: EditSettings) -> np.ndarray | None:
  """The recording's clean latent where the edit needs it (FlowEdit starts there; outside its
  regions a region edit is pasted back to it), else None."""
  if settings.method != "flowedit" and not settings.regions:
    return None
  if recording.encoded is None:
    raise SettingsError("{field} of a saved inversion need the recording itself: give it too ({input_audio})",
                        field="regions", mentions=("input_audio",))
  return recording.encoded


def edit_recording(model: LoadedModel, recording: Recording, settings: EditSettings, *,
                   kv_from_inversion: bool = False, decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
                   windows: WindowSettings | None = None, on_step: common.Listener | None = None) -> EditResult:
  """Edits a recording made ready by its method (an Inversion, or encode_recording's): every
  prompt starts from its start latent; the output has the recording's own length. A recording
  longer than one window is edited over the windows it was made ready with (its `windows`),
  batched as `windows` says (windows_per_batch, memory_budget_gib; default: the recording's).

  kv_from_inversion: take the source K/V recorded during inversion (Inversion.kv, same steps and
  vital layers) instead of re-running the source branch: the source is not regenerated, so the
  result covers the prompts after the first only."""
  settings = settings.for_recording(model.config)
  n = len(settings.generation.prompts)
  geometry = recording.windows.running_as(windows) if recording.windows is not None else None
  check_edit(model, settings, recording.n_samples, geometry, kv_from_inversion=kv_from_inversion)
  x_init = np.repeat(recording.start, n, axis=0)
  reference = region_reference(recording, settings)
  if geometry is not None:
    latents, plan = long_recording.edit_latents(model, settings, x_init, geometry, recording.n_samples,
                                                source_guidance=source_guidance(settings), reference=reference,
                                                on_step=on_step)
  else:
    plan = build_plan(model, settings, x_init, source_guidance=source_guidance(settings), check_coverage=False,
                      seconds=(settings.generation.audio_start_in_s,
                               common.recording_seconds(model.config, recording.n_samples,
                                                        settings.generation.audio_end_in_s)),
                      reference=reference)
    if kv_from_inversion:
      plan = plan.select(range(1, n))  # the source is not regenerated: the edits read the inversion's K/V
      latents = run_from_cache(model, plan, inversion_kv_cache(recording, settings), on_step=on_step)
    else:
      latents = sample_edit(model, plan, settings.injection_mode, on_step=on_step)
  return edit_result(model, plan, settings, latents, recording=recording, kv_from_inversion=kv_from_inversion,
                     decode_chunk_frames=decode_chunk_frames)


def inversion_kv_cache(inversion: Inversion, settings: EditSettings) -> KVCache:
  """The K/V an inversion recorded, as the cache an edit with the same steps and vital layers reads."""
  kv = inversion.kv
  steps = settings.generation.num_inference_steps
  if kv is None or tuple(kv.layers) != tuple(settings.vital_layers):
    raise SettingsError("the inversion recorded no K/V for these {field}; invert with the same vital layers "
                        "(record_layers) to edit from the inversion's K/V", field="vital_layers")
  if kv.k.shape[0] != steps:
    raise SettingsError(f"the inversion ran {kv.k.shape[0]} steps but the edit asks for {steps}; use the same "
                        "{field}", field="num_inference_steps")
  return kv_lib.cache_from_inversion(kv)


@dataclasses.dataclass(frozen=True)
class InversionChecks:
  """What checking a recording's edit and inversion found: the windows of a recording longer than
  one window (None: it fits one), the layers whose K/V the inversion records, and what to tell a
  person before the inversion starts."""

  geometry: WindowSettings | None
  record_layers: tuple[int, ...]
  messages: tuple[str, ...]


def check_recording_edit(model: LoadedModel, n_samples: int, settings: EditSettings,
                         inversion_settings: InversionSettings, windows: WindowSettings | None, *,
                         kv_from_inversion: bool = False) -> InversionChecks:
  """Every check of an edit of a recording of n_samples, before its inversion (which costs as many
  DiT calls as the edit): the edit's first (a refused edit is not the inversion's problem), then the
  inversion's. Raises SettingsError (naming the setting)."""
  cfg = model.config
  settings = settings.for_recording(cfg)
  inversion_settings = inversion_settings.for_model(cfg)
  record_layers = tuple(settings.vital_layers) if kv_from_inversion else ()
  geometry = window_geometry(model, n_samples, windows)
  check_edit(model, settings, n_samples, geometry, kv_from_inversion=kv_from_inversion)
  if settings.method == "inversion":
    geometry = check_inversion(model, n_samples, inversion_settings, windows, record_layers)
  seconds = n_samples / cfg.sample_rate
  messages = []
  if geometry is not None:
    layout = geometry.layout(cfg, cfg.frames_for_samples(n_samples))
    messages.append(f"{seconds:.2f} s is longer than one window: {layout.n_windows} windows of "
                    f"{cfg.seconds_of_frames(layout.width):.2f} s, one diffusion process over the whole latent")
  if settings.method == "inversion":
    messages.append(f"inverting {seconds:.2f} s ({inversion_settings.variant} inversion, "
                    f"{inversion_settings.num_inference_steps} steps)")
  return InversionChecks(geometry, record_layers, tuple(messages))


def edit_audio(model: LoadedModel, audio: np.ndarray, settings: EditSettings, inversion_settings: InversionSettings, *,
               windows: WindowSettings | None = None, kv_from_inversion: bool = False,
               progress: PhaseProgress | None = None,
               log: Callable[[str], None] = lambda message: None) -> tuple[EditResult, Recording]:
  """A recording (channels, samples) at the model's rate, made ready by the settings' method
  (inverted, or encoded) and edited: every check first (windows or not, the edit, the memory),
  then the inversion, then the edit. progress(phase, steps) gives the listener of each phase; log
  tells what is about to happen."""
  cfg = model.config
  settings = settings.for_recording(cfg)
  inversion_settings = inversion_settings.for_model(cfg)
  checks = check_recording_edit(model, int(np.shape(audio)[-1]), settings, inversion_settings, windows,
                                kv_from_inversion=kv_from_inversion)
  for message in checks.messages:
    log(message)
  if settings.method != "inversion":
    inversion = encode_recording(model, audio, settings, windows)
  else:
    with _phase(progress, "inverting", inversion_settings.num_inference_steps) as listener:
      inversion = invert_audio(model, audio, inversion_settings, record_layers=checks.record_layers,
                               windows=windows, on_step=listener)
  with _phase(progress, "editing", settings.generation.num_inference_steps) as listener:
    result = edit_recording(model, inversion, settings, kv_from_inversion=kv_from_inversion, windows=windows,
                            on_step=listener)
  return result, inversion


def _phase(progress: PhaseProgress | None, name: str, steps: int) -> AbstractContextManager:
  return progress(name, steps) if progress is not None else nullcontext()


# ----------------------------------------------------------------------------- saved inversions


def sidecar_path(latent_path: str | Path) -> Path:
  return Path(latent_path).with_suffix(".json")


def load_inversion(path: str | Path, config: ModelConfig, *, n_samples: int | None = None) -> Inversion:
  """Reads an inverted latent (1, C, T) .npy and its JSON sidecar, checked against the model and,
  when given, against the length in samples of the recording it should belong to."""
  path = Path(path).expanduser()
  problem = not_a_file(path, f"{{field}} {path}", kind=".npy file")
  if problem:
    raise SettingsError(problem, field="inverted_latent")
  try:
    latent = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise SettingsError(f"{{field}} {path}: not a readable .npy file ({e})", field="inverted_latent") from None
  channels, window = config.dit.io_channels, config.dit.sample_size
  if latent.ndim != 3 or latent.shape[0] != 1 or latent.shape[1] != channels or latent.shape[2] < 1:
    raise SettingsError(f"{{field}} has shape {latent.shape}; this model needs (1, {channels}, T): invert with "
                        "this model", field="inverted_latent")
  if not np.issubdtype(latent.dtype, np.floating) or not np.all(np.isfinite(latent)):
    raise SettingsError("{field} is not finite floating-point data (NaN, infinite or integer values)",
                        field="inverted_latent")
  frames = latent.shape[2]
  hop = config.vae.hop_length
  sidecar = sidecar_path(path)
  settings = InversionSettings(prompt="(unknown)")
  stored_samples = frames * hop
  windows = None
  if sidecar.is_file():
    try:
      record = json.loads(sidecar.read_text())
      stored_samples = int(record.get("n_samples", stored_samples))
      settings = InversionSettings(**record.get("settings", {"prompt": "(unknown)"}))
      if "windows" in record:  # where the windows fell; how to batch them is the edit's choice
        windows = WindowSettings(**record["windows"]).geometry()
        long_recording.check_recording(config, stored_samples, windows)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError, SettingsError) as e:
      raise SettingsError(f"{{field}}: its sidecar {sidecar} is damaged or from another model ({e}); invert the "
                          "recording again", field="inverted_latent") from None
    if config.frames_for_samples(stored_samples) != frames:
      raise SettingsError(f"{{field}}: its sidecar says {stored_samples} samples, which is not {frames} latent "
                          "frames; the files do not belong together, invert again", field="inverted_latent")
  if n_samples is not None:
    needed = config.frames_for_samples(n_samples)
    if needed != frames:
      raise SettingsError(f"{{field}} has {frames} frames but the recording (this segment) needs {needed}; invert "
                          "this recording / segment again", field="inverted_latent")
    stored_samples = n_samples
  if frames > window and windows is None:
    raise SettingsError(f"{{field}} has {frames} frames, more than the model's window of {window}, and no sidecar "
                        f"{sidecar.name} saying how its windows were laid out; invert the recording again",
                        field="inverted_latent")
  return Inversion(inverted=latent.astype(np.float32), encoded=None, n_samples=stored_samples, settings=settings,
                   windows=windows)
