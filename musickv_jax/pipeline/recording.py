"""Editing a recording: encode it with the VAE, invert it to the model's initial-noise space, and
edit from there. Prompt 0 describes the recording (the source); the source is regenerated with
guidance 1 (its reconstruction) and the edits with the settings' guidance and KV injection.

An inversion can be saved (`inverted_latent.npy` with `inverted_latent.json` beside it) and
edited many times later: `load_inversion` reads and checks such a file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax import vae_ops
from musickv_jax.audio import pad_to_hop
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.models.dit import KVCache
from musickv_jax.pipeline import common
from musickv_jax.pipeline import long_recording
from musickv_jax.pipeline.long_recording import WindowSettings
from musickv_jax.pipeline.conditioning import guided_conditioning, text_conditioning
from musickv_jax.pipeline.editing import EditResult, cache_from_inversion, edit_from_cache, edit_latents
from musickv_jax.pipeline.settings import EditSettings, InversionSettings
from musickv_jax.sampling import guided
from musickv_jax.sampling import inversion as inversion_lib

SOURCE_GUIDANCE = 1.0  # the recording's reconstruction runs without guidance, as in the reference


def recording_guidance(n_prompts: int, guidance_scale: float) -> np.ndarray:
  """(n,) guidance per prompt of a recording's edit: SOURCE_GUIDANCE for the source, the scale for the rest."""
  guidance = np.full((n_prompts,), guidance_scale, np.float32)
  guidance[0] = SOURCE_GUIDANCE
  return guidance


@dataclasses.dataclass
class Inversion:
  inverted: np.ndarray  # (1, C, T): the latent at sigma_max, x_T for the edit (used as given)
  encoded: np.ndarray | None  # (1, C, T): the clean latent of the recording (None when read from a file)
  n_samples: int  # the recording's length at the model's sample rate
  settings: InversionSettings
  kv: KVCache | None = None  # vital-layer K/V over the inversion steps (conditional row), or None
  windows: WindowSettings | None = None  # a recording longer than one window: how it was covered

  def describe(self) -> dict:
    record = {"n_samples": self.n_samples, "latent_shape": list(self.inverted.shape),
              "settings": self.settings.to_json_dict()}
    if self.windows is not None:
      record["windows"] = self.windows.to_json_dict()
    return record

  def notes_for(self, settings: EditSettings) -> list[str]:
    """Differences between how the recording was inverted and how it is about to be edited that
    are allowed but change the result (the caller may want to show them)."""
    notes = []
    gen = settings.generation
    if self.settings.num_inference_steps != gen.num_inference_steps:
      notes.append(f"the recording was inverted with {self.settings.num_inference_steps} steps but is edited with "
                   f"{gen.num_inference_steps}; the source reconstruction is closest with the same number")
    if self.settings.prompt.strip() != gen.prompts[0].strip():
      notes.append(f"the recording was inverted with the description {self.settings.prompt!r} but the source "
                   f"prompt is {gen.prompts[0]!r}; the source reconstruction is closest with the same text")
    return notes


def encode_audio(model: LoadedModel, audio: np.ndarray, *, sample: bool = False, seed: int = 0) -> jax.Array:
  """(channels, samples) audio at the model's rate -> latents (1, C, T): the VAE posterior mean
  (deterministic) or a sample from it. The audio is zero-padded to whole VAE hops."""
  cfg = model.config
  padded = pad_to_hop(np.asarray(audio, np.float32), cfg.vae.hop_length)[None]
  dist = vae_ops.encode(model.params["vae"], padded, cfg.vae)
  return dist.sample(jax.random.key(seed)) if sample else dist.mean


def invert_latents(model: LoadedModel, latents, settings: InversionSettings, *, record_layers: tuple[int, ...] = (),
                   on_step: common.Listener | None = None) -> tuple[np.ndarray, KVCache | None]:
  """Clean latents (1, C, T) -> (latent at sigma_max, recorded K/V or None)."""
  cfg = model.config
  settings.validate(cfg, int(np.shape(latents)[-1]))
  cond = text_conditioning(model, [settings.prompt], 0.0, settings.resolved_total(cfg))
  plan = settings.plan()
  guided_cond = guided.GuidedConditioning(cond.cross_tokens, cond.global_cond, jnp.ones((1,), jnp.float32))
  with common.progress(on_step):
    inverted, kv = inversion_lib.invert_in_chunks(model.params["dit"], guided_cond, jnp.asarray(latents, jnp.float32),
                                                  plan, dit_config=cfg.dit, record_layers=tuple(record_layers))
  return common.to_host(inverted), kv


def invert_audio(model: LoadedModel, audio: np.ndarray, settings: InversionSettings, *,
                 record_layers: tuple[int, ...] = (), windows: WindowSettings | None = None,
                 on_step: common.Listener | None = None) -> Inversion:
  """A recording (channels, samples) at the model's rate -> its inverted latent. A recording longer
  than one window (`windows`, default: the model's window) is inverted over overlapping windows
  (pipeline.long_recording)."""
  cfg = model.config
  n_samples = int(np.shape(audio)[-1])
  frames = -(-n_samples // cfg.vae.hop_length)
  windows = windows or WindowSettings()
  windows.validate(cfg)
  if windows.needs_windows(cfg, frames):
    long_recording.check_recording(cfg, n_samples, windows)
    settings.validate(cfg)
    if settings.seconds_total is not None:
      raise SettingsError("{field} does not apply to a recording longer than one window (each window is "
                          "conditioned on its start and the recording's length); leave it out", field="seconds_total")
    if record_layers:
      raise SettingsError("K/V cannot be recorded while inverting a recording longer than one window; edit it "
                          "without {field}", field="kv_from_inversion")
    encoded = encode_audio(model, audio, sample=settings.sample_latent, seed=settings.seed)
    inverted = long_recording.invert_latents(model, encoded, settings, windows, n_samples, on_step=on_step)
    return Inversion(inverted=inverted, encoded=np.asarray(encoded), n_samples=n_samples, settings=settings,
                     windows=windows)
  settings.validate(cfg, frames)
  encoded = encode_audio(model, audio, sample=settings.sample_latent, seed=settings.seed)
  inverted, kv = invert_latents(model, encoded, settings, record_layers=record_layers, on_step=on_step)
  return Inversion(inverted=inverted, encoded=np.asarray(encoded), n_samples=int(np.shape(audio)[-1]),
                   settings=settings, kv=kv)


def edit_recording(model: LoadedModel, inversion: Inversion, settings: EditSettings, *,
                   kv_from_inversion: bool = False, decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
                   windows: WindowSettings | None = None, on_step: common.Listener | None = None) -> EditResult:
  """Edits an inverted recording: every prompt starts from the inverted latent; the output has
  the recording's own length. A recording longer than one window is edited over the windows it
  was inverted with (Inversion.windows), batched as `windows` says (windows_per_batch,
  memory_budget_gib; default: the inversion's).

  kv_from_inversion: take the source K/V recorded during inversion (Inversion.kv, same steps and
  vital layers) instead of re-running the source branch: the source is not regenerated, so the
  result covers the prompts after the first only."""
  cfg = model.config
  gen = settings.generation
  schedule = settings.validate(cfg)
  n = len(gen.prompts)
  x_init = np.repeat(inversion.inverted, n, axis=0)
  if inversion.windows is not None:
    if kv_from_inversion:
      raise SettingsError("a recording longer than one window is edited by regenerating its source (the K/V of "
                          "every window and step would not fit); leave out {field}", field="kv_from_inversion")
    latents, roles = long_recording.edit_latents(model, settings, schedule, x_init,
                                                 recording_guidance(n, gen.guidance_scale),
                                                 inversion.windows.running_as(windows), inversion.n_samples,
                                                 on_step=on_step)
    prompts = list(gen.prompts)
  elif not kv_from_inversion:
    latents, roles = edit_latents(model, settings, schedule, x_init, recording_guidance(n, gen.guidance_scale),
                                  on_step=on_step)
    prompts = list(gen.prompts)
  else:
    latents, roles = _edit_from_inversion_kv(model, inversion, settings, schedule, x_init[1:], on_step)
    prompts = list(gen.prompts[1:])
  audio = common.decode(model, latents, 0, inversion.n_samples, decode_chunk_frames)
  seconds_total = (gen.resolved_end(cfg) if inversion.windows is None
                   else long_recording.seconds_total(cfg, inversion.n_samples))  # what the windows were given
  return EditResult(audio=audio, latents=latents, prompts=prompts, roles=roles, sample_rate=cfg.sample_rate,
                    settings=settings, schedule=schedule, latent_frames=int(x_init.shape[-1]),
                    audio_end_in_s=seconds_total)


def _edit_from_inversion_kv(model, inversion: Inversion, settings: EditSettings, schedule, x_init,
                            on_step) -> tuple[np.ndarray, list[str]]:
  gen = settings.generation
  kv = inversion.kv
  if kv is None or tuple(kv.layers) != tuple(settings.vital_layers):
    raise SettingsError("the inversion recorded no K/V for these {field}; invert with the same vital layers "
                        "(record_layers) to edit from the inversion's K/V", field="vital_layers")
  if kv.k.shape[0] != gen.num_inference_steps:
    raise SettingsError(f"the inversion ran {kv.k.shape[0]} steps but the edit asks for {gen.num_inference_steps}; "
                        "use the same {field}", field="num_inference_steps")
  n = len(gen.prompts)
  edits = tuple(range(n - 1)) if settings.edit_all else (0,)
  cond = guided_conditioning(model, gen.prompts[1:], negative_prompt=gen.negative_prompt,
                             seconds_start=gen.audio_start_in_s, seconds_total=gen.resolved_end(model.config),
                             guidance=np.full((n - 1,), gen.guidance_scale, np.float32), use_cfg=gen.uses_cfg)
  latents = edit_from_cache(model, settings, schedule, cache_from_inversion(kv), cond, x_init, edits,
                            use_cfg=gen.uses_cfg, on_step=on_step)
  return latents, ["edit" if p in edits else "plain" for p in range(n - 1)]


# ----------------------------------------------------------------------------- saved inversions


def sidecar_path(latent_path: str | Path) -> Path:
  return Path(latent_path).with_suffix(".json")


def load_inversion(path: str | Path, config: ModelConfig, *, n_samples: int | None = None) -> Inversion:
  """Reads an inverted latent (1, C, T) .npy and its JSON sidecar, checked against the model and,
  when given, against the length in samples of the recording it should belong to."""
  path = Path(path).expanduser()
  if not path.is_file():
    raise SettingsError(f"{{field}} {path}: file not found", field="inverted_latent")
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
    if -(-stored_samples // hop) != frames:
      raise SettingsError(f"{{field}}: its sidecar says {stored_samples} samples, which is not {frames} latent "
                          "frames; the files do not belong together, invert again", field="inverted_latent")
  if n_samples is not None:
    needed = -(-n_samples // hop)
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
