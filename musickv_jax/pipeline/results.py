"""What the pipeline returns: generations, edits and inversions, each able to describe itself for a
sidecar record (every setting and what it resolved to). `edit_result` finishes every kind of edit
the same way: decode the kept span, resolve the seconds conditioning, describe the recording.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.models import vae_ops
from musickv_jax.models.dit import KVCache
from musickv_jax.pipeline import common
from musickv_jax.pipeline.plan import EditPlan
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings, InversionSettings, WindowSettings
from musickv_jax.sampling import rows as rows_lib

SOURCE_GUIDANCE = 1.0  # a recording's reconstruction runs without guidance, as in the reference


def source_guidance(settings: EditSettings) -> float:
  """The source row's guidance in the edit of a recording (settings resolved for the model): its
  reconstruction's (1) when it is regenerated (inversion, SDEdit); FlowEdit's source branch, the
  edit's unless asked otherwise."""
  if settings.method == "flowedit":
    asked = settings.flowedit_source_guidance
    return float(settings.generation.guidance_scale if asked is None else asked)
  return SOURCE_GUIDANCE


def edit_dit_rows(settings: EditSettings, *, recording: bool) -> int:
  """The DiT rows an edit evaluates (settings resolved for the model): every prompt row, twice with
  CFG, at every step (FlowEdit: every noise draw; SDEdit at level 0: none); the inversion's are
  `inversion_dit_rows`."""
  gen = settings.generation
  source = source_guidance(settings) if recording else gen.guidance_scale
  branches = rows_lib.branches(rows_lib.uses_cfg([source, gen.guidance_scale], gen.negative_prompt))
  if settings.method == "sdedit" and gen.init_noise_level == 0:
    return 0
  draws = settings.flowedit_samples if settings.method == "flowedit" else 1
  return gen.num_inference_steps * draws * len(gen.prompts) * branches


def inversion_dit_rows(settings: EditSettings) -> int:
  """The DiT rows of inverting a recording for this edit: one conditional row a step (0 for the
  methods that invert nothing)."""
  return settings.generation.num_inference_steps if settings.method == "inversion" else 0


@dataclasses.dataclass
class Generation:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed
  latents: np.ndarray  # (n, C, T) final latents
  sample_rate: int
  settings: GenerationSettings
  latent_frames: int
  audio_end_in_s: float  # resolved (the model's maximum when the settings leave it open)
  use_cfg: bool

  def describe(self) -> dict:
    """The settings and what they resolved to, for a sidecar JSON."""
    return {"settings": self.settings.to_json_dict(),
            "resolved": {"audio_end_in_s": self.audio_end_in_s, "latent_frames": self.latent_frames,
                         "sample_rate": self.sample_rate, "use_cfg": self.use_cfg}}


@dataclasses.dataclass
class EditResult:
  audio: np.ndarray  # (n, channels, samples) float32, trimmed; one row per entry of `prompts`
  latents: np.ndarray  # (n, C, T)
  prompts: list[str]  # the prompt of each row
  roles: list[str]  # "source", "edit" or "plain" (generated without injection) per row
  sample_rate: int
  settings: EditSettings
  schedule: np.ndarray  # the validated injection weights
  latent_frames: int
  audio_end_in_s: float  # resolved seconds_total conditioning
  recording: dict | None = None  # an edited recording: how it was inverted (Inversion.describe())

  @property
  def n_edits(self) -> int:
    return self.roles.count("edit")

  def describe(self) -> dict:
    """The settings and what they resolved to, for a sidecar JSON."""
    record = {"settings": self.settings.generation.to_json_dict(),
              "editing": self.settings.to_json_dict() | {"schedule_values": np.asarray(self.schedule).tolist()},
              "resolved": {"audio_end_in_s": self.audio_end_in_s, "latent_frames": self.latent_frames,
                           "sample_rate": self.sample_rate}}
    if self.recording is not None:
      record["real_audio"] = dict(self.recording)
    return record


@dataclasses.dataclass
class Inversion:
  inverted: np.ndarray  # (1, C, T): the latent at sigma_max, x_T for the edit (used as given)
  encoded: np.ndarray | None  # (1, C, T): the clean latent of the recording (None when read from a file)
  n_samples: int  # the recording's length at the model's sample rate
  settings: InversionSettings
  kv: KVCache | None = None  # vital-layer K/V over the inversion steps (conditional row), or None
  windows: WindowSettings | None = None  # a recording longer than one window: how it was covered
  method = "inversion"

  @property
  def start(self) -> np.ndarray:
    """(1, C, T) the latent the edit starts from."""
    return self.inverted

  def describe(self) -> dict:
    record = {"method": self.method, "n_samples": self.n_samples, "latent_shape": list(self.inverted.shape),
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


@dataclasses.dataclass
class EncodedRecording:
  """A recording made ready for an edit that does not invert it: its clean latent, and the latent
  the edit starts from (FlowEdit: the clean latent itself; SDEdit: it noised to init_noise_level)."""

  encoded: np.ndarray  # (1, C, T) the VAE's posterior mean of the recording
  start: np.ndarray  # (1, C, T)
  n_samples: int
  method: str  # flowedit or sdedit
  windows: WindowSettings | None = None  # a recording longer than one window: how it is covered
  kv = None  # no inversion recorded K/V

  def describe(self) -> dict:
    record = {"method": self.method, "n_samples": self.n_samples, "latent_shape": list(self.encoded.shape)}
    if self.windows is not None:
      record["windows"] = self.windows.to_json_dict()
    return record

  def notes_for(self, settings: EditSettings) -> list[str]:
    return []


# how an edited recording was made ready: inverted, or encoded only
Recording = Inversion | EncodedRecording


def edit_result(model: LoadedModel, plan: EditPlan, settings: EditSettings, latents: np.ndarray, *,
                recording: Recording | None = None, kv_from_inversion: bool = False,
                decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES) -> EditResult:
  """An edit's result from its final latents (n, C, T): a generated source keeps the settings'
  span [audio_start_in_s, audio_end_in_s]; a recording keeps its own length, and a recording longer
  than one window was conditioned on its length (each window's seconds_total)."""
  cfg = model.config
  gen = settings.generation
  if recording is None:
    span, seconds_total, record = common.output_span(gen, cfg), gen.resolved_end(cfg), None
  else:
    span = (0, recording.n_samples)
    seconds_total = (common.recording_seconds(cfg, recording.n_samples, gen.audio_end_in_s)
                     if recording.windows is None else recording.n_samples / cfg.sample_rate)
    record = recording.describe() | {"kv_from_inversion": kv_from_inversion,
                                     "source_guidance": source_guidance(settings)}
  audio = common.decode_output(model, latents, *span, decode_chunk_frames)
  return EditResult(audio=audio, latents=latents, prompts=plan.prompts, roles=plan.roles,
                    sample_rate=cfg.sample_rate, settings=settings, schedule=np.asarray(plan.schedule),
                    latent_frames=int(latents.shape[-1]), audio_end_in_s=seconds_total, recording=record)
