"""The flags the commands share (README's command-line contract) and how they become the
library's settings.

This is the one place that knows both names: `FLAG_OF_FIELD` maps a library field to the flag
that feeds it where the two differ, so a library error about `start_s` prints `--input_start_s`.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from musickv_jax import files
from musickv_jax.audio import WAV_SUBTYPES, LoadedAudio, load_audio
from musickv_jax.checkpoint import LoadedModel
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.progress import progress_bar
from musickv_jax.cli.runner import Flags, UsageError, define_number_list
from musickv_jax.jobs.request import DEFAULTS, EditRequest, RecordingRequest, ScheduleRequest
from musickv_jax.loading import load_model as load_any_model
from musickv_jax.pipeline import GenerationSettings, InversionSettings, WindowSettings, presets
from musickv_jax.research import probing

FLAG_OF_FIELD = {
    "start_s": "input_start_s", "end_s": "input_end_s",  # recording segment (audio.load_audio)
    "variant": "inversion", "order": "inversion_order", "prompt": "prompts",  # InversionSettings
    "seconds_total": "audio_end_in_s", "sample_latent": "sample_latent", "path": "input_audio",
    "t5_dir": "t5",  # the converter
    "method": "edit_method", "regions": "edit_region",  # EditRequest / EditSettings
}


# ----------------------------------------------------------------------------- model


def define_model_flags(fv: Flags) -> None:
  flags.DEFINE_string("model", None, "Converted checkpoint dir, or a diffusers / stable-audio-tools checkpoint "
                      "or hub id (converted once into a cache).", flag_values=fv)
  flags.DEFINE_string("hf_token", None, "Hugging Face token, for --model given as a gated hub id.", flag_values=fv)
  flags.DEFINE_string("t5", None, "T5 folder, when --model is an unconverted stable-audio-tools file.",
                      flag_values=fv)
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 for the DiT and VAE.", flag_values=fv)
  flags.DEFINE_string("attention", "auto", "How attention is computed: auto (the fastest for the backend), xla "
                      "(the reference einsum path), blocked (CPU), cudnn (GPU, bfloat16), splash (TPU).",
                      flag_values=fv)


def check_model_flag(fv: Flags) -> None:
  if not fv.model:
    raise UsageError("--model is required: a converted checkpoint directory, a diffusers / stable-audio-tools "
                     "checkpoint, or a hub id")


def load_model(fv: Flags) -> LoadedModel:
  check_model_flag(fv)
  print(f"loading {fv.model}", flush=True)  # a real checkpoint takes a while to read
  return load_any_model(fv.model, hf_token=fv.hf_token, t5=fv.t5, dtype=fv.dtype, attention=fv.attention)


# ----------------------------------------------------------------------------- generation


def define_generation_flags(fv: Flags, *, audio_end_default: float | None, output_default: str = "outputs/",
                            per_run: bool = True) -> None:
  """per_run: also --prompts, --init_latents and --save_latents (not for a batch, whose jobs bring
  their own prompts)."""
  define_model_flags(fv)
  if per_run:
    flags.DEFINE_multi_string("prompts", [], "Prompts: --prompts \"first\" \"second\" ...", flag_values=fv)
  flags.DEFINE_string("negative_prompt", None, "Negative prompt for the unconditional branch.", flag_values=fv)
  flags.DEFINE_float("audio_start_in_s", DEFAULTS.audio_start_in_s, "Start of the returned audio, seconds.", flag_values=fv)
  flags.DEFINE_float("audio_end_in_s", audio_end_default, "End of the returned audio, seconds" +
                     (" (default: the model's maximum)." if audio_end_default is None else
                      f" (default: {audio_end_default:g}, at most the model's window)."), flag_values=fv)
  flags.DEFINE_integer("num_inference_steps", None, "Sampling steps (default: the model's: 100 for Stable Audio Open "
                       "1.0, 8 for Stable Audio Open Small).", flag_values=fv)
  flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance scale, 1 disables guidance (default: the "
                     "preset's, else the model's: 7 for Stable Audio Open 1.0, 1 for Stable Audio Open Small).",
                     flag_values=fv)
  flags.DEFINE_string("sampler", None, "Stable Audio Open 1.0 (v objective): dpmpp-2m (deterministic, the default), "
                      "dpmpp-2m-sde, dpmpp-1. Rectified flow (Stable Audio Open Small): pingpong (the default for the "
                      "few-step model), euler (the ODE; the default for recordings).", flag_values=fv)
  flags.DEFINE_string("sigma_schedule", DEFAULTS.sigma_schedule, "exponential (the references) or karras (v objective).",
                      flag_values=fv)
  flags.DEFINE_integer("seed", DEFAULTS.seed, "Seed of the initial noise (and of a stochastic sampler's noise), 0 to 2**32 - 1.",
                       flag_values=fv)
  if per_run:
    flags.DEFINE_string("init_latents", None, ".npy of the exact initial latents x_T, shape (n_prompts, C, T), "
                        "already at the first noise level (rectified flow: the noise at t = 1); used as given.",
                        flag_values=fv)
    flags.DEFINE_string("step_noise", None, ".npy of the noise each step of a stochastic sampler (pingpong, "
                        "dpmpp-2m-sde) adds, shape (steps, 1, C, T), shared by every prompt (default: drawn from "
                        "--seed).", flag_values=fv)
    flags.DEFINE_string("save_latents", None, "Write the final latents of all prompts to this .npy.", flag_values=fv)
  flags.DEFINE_string("latent_length", DEFAULTS.latent_length, "full: the model's whole window, trimmed after decoding (what the "
                      "references do); fit: just long enough for --audio_end_in_s (faster).", flag_values=fv)
  flags.DEFINE_string("output_path", output_default, "Directory for the outputs.", flag_values=fv)
  flags.DEFINE_string("wav_subtype", "FLOAT", "WAV sample format: FLOAT, PCM_16 or PCM_24.", flag_values=fv)


def generation_settings(fv: Flags | Values) -> GenerationSettings:
  return GenerationSettings(
      prompts=tuple(fv.prompts), negative_prompt=fv.negative_prompt, audio_start_in_s=fv.audio_start_in_s,
      audio_end_in_s=fv.audio_end_in_s, num_inference_steps=fv.num_inference_steps,
      guidance_scale=fv.guidance_scale, sampler=fv.sampler, sigma_schedule=fv.sigma_schedule, seed=fv.seed,
      latent_length=fv.latent_length)


def check_output_flags(fv: Flags) -> Path:
  """--wav_subtype, --save_latents and --output_path, before any work; returns the output folder."""
  if fv.wav_subtype not in WAV_SUBTYPES:
    raise UsageError(f"--wav_subtype must be one of {WAV_SUBTYPES}, got {fv.wav_subtype!r}")
  if "save_latents" in fv and fv.save_latents:
    if not fv.save_latents.endswith(".npy"):
      raise UsageError(f"--save_latents must name a .npy file, got {fv.save_latents!r}")
    check_output_dir(Path(fv.save_latents).expanduser().parent, "save_latents")
  return check_output_dir(fv.output_path)


def load_npy(path: str, flag: str) -> np.ndarray:
  file = Path(path).expanduser()
  problem = files.not_a_file(file, f"--{flag} {file}", kind=".npy file")
  if problem:
    raise UsageError(problem)
  try:
    return np.load(file, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise UsageError(f"--{flag} {file}: not a readable .npy file ({e})") from None


# ----------------------------------------------------------------------------- editing


def define_edit_flags(fv: Flags) -> None:
  flags.DEFINE_string("preset", None, "Editing preset: a name from configs/presets/ (" + ", ".join(presets.available())
                      + "), a path to a preset .json (vital layers, skip layers, guidance, time-varying), or probe "
                      "(find this checkpoint's vital layers once with musickv-probe-layers and keep them next to the "
                      "converted checkpoint). Default: the preset made for the model (musickv for Stable Audio Open "
                      "1.0; musickv-small for Stable Audio Open Small, whose layers are a proportional guess). Flags "
                      "given explicitly override it.", flag_values=fv)
  flags.DEFINE_list("vital_layers", None, "DiT blocks whose self-attention K/V come from the source "
                    "(default from the preset: 20,3,4 for Stable Audio Open 1.0).", flag_values=fv)
  flags.DEFINE_list("skip_layers", None, "DiT blocks whose self-attention is bypassed for every sample (probing).",
                    flag_values=fv)
  flags.DEFINE_string("schedule", None, "linear_ramp (the reference's time-varying schedule), constant, cosine, "
                      "window, per_layer, or a .npy file of shape (steps, n_vital_layers[, n_edits]). Default: "
                      "linear_ramp if the preset is time-varying, else constant.", flag_values=fv)
  schedule = DEFAULTS.schedule
  flags.DEFINE_float("schedule_weight", schedule.weight, "Weight of the constant and window schedules.", flag_values=fv)
  define_number_list("ramp", [f"{v:g}" for v in schedule.ramp], "FROM,TO values of the linear_ramp / cosine "
                     "schedules.", fv)
  define_number_list("window", [f"{v:g}" for v in schedule.window], "START,END fractions of the steps for the window "
                     "schedule.", fv)
  flags.DEFINE_list("layer_schedules", [], "per_layer: one schedule name per vital layer.", flag_values=fv)
  flags.DEFINE_bool("allow_unbounded_schedule", DEFAULTS.allow_unbounded_schedule, "Accept schedule values outside [0, 1].", flag_values=fv)
  flags.DEFINE_string("injection_mode", DEFAULTS.injection_mode, "joint (one batch) or cached (record the source, then edit).",
                      flag_values=fv)
  flags.DEFINE_bool("edit_all", DEFAULTS.edit_all, "Every prompt after the first is an edit of the same source.", flag_values=fv)
  flags.DEFINE_multi_string("edit_region", [], "START,END seconds: only this span follows the edit; outside it the "
                            "result is the source (a recording's own latent). Repeat for several spans.",
                            flag_values=fv)
  flags.DEFINE_float("region_crossfade_s", DEFAULTS.region_crossfade_s, "Crossfade just outside each --edit_region, "
                     "seconds.", flag_values=fv)


def define_method_flags(fv: Flags) -> None:
  """How a recording is edited (musickv-edit, musickv-edit-batch)."""
  flags.DEFINE_string("edit_method", DEFAULTS.method, "How --input_audio is edited: inversion (invert it, then "
                      "regenerate), flowedit (no inversion: moves the recording's latent by the difference of the "
                      "model's directions under the edit and source prompts), sdedit (from the recording's latent "
                      "noised to --init_noise_level). KV injection applies to each.", flag_values=fv)
  flags.DEFINE_float("init_noise_level", None, "sdedit: where sampling starts on the model's time axis, 0 to 1 (0: "
                     "the recording itself; 1: pure noise; default 0.6).", flag_values=fv)
  flags.DEFINE_integer("flowedit_samples", DEFAULTS.flowedit_samples, "flowedit: noise draws the velocity difference "
                       "is averaged over at every step (each a DiT call of every row).", flag_values=fv)
  flags.DEFINE_float("flowedit_start", DEFAULTS.flowedit_start, "flowedit: the model time it starts at, (0, 1] "
                     "(higher: larger changes).", flag_values=fv)
  flags.DEFINE_float("flowedit_source_guidance", None, "flowedit: the source branch's guidance scale (default: the "
                     "edit's).", flag_values=fv)


def region_list(values, flag: str = "edit_region") -> tuple[tuple[float, float], ...]:
  """START,END strings (or pairs) -> ((start, end), ...) seconds."""
  regions = []
  for value in values or ():
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
      start, end = (float(part) for part in parts)
    except (TypeError, ValueError):
      raise UsageError(f"--{flag} takes START,END seconds, got {value!r}") from None
    regions.append((start, end))
  return tuple(regions)


def int_list(values, flag: str) -> tuple[int, ...]:
  out = []
  for v in values:
    try:
      out.append(int(v))
    except ValueError:
      raise UsageError(f"--{flag} takes comma-separated integers, got {v!r}") from None
  return tuple(out)


def _float_pair(values, flag: str) -> tuple[float, float]:
  try:
    a, b = (float(v) for v in values)
  except ValueError:
    raise UsageError(f"--{flag} takes two comma-separated numbers, got {','.join(values)!r}") from None
  return a, b


@dataclasses.dataclass(frozen=True)
class Values:
  """Flag values by name and which of them were given explicitly. A batch job lays its own values
  over the command line's (musickv-edit-batch), so both read requests through this."""

  values: Mapping[str, Any]
  explicit: frozenset[str] = frozenset()

  @classmethod
  def from_flags(cls, fv: Flags) -> "Values":
    names = list(fv)
    return cls({name: fv[name].value for name in names}, frozenset(name for name in names if fv[name].present))

  def __getattr__(self, name: str):
    try:
      return self.values[name]
    except KeyError:
      raise AttributeError(name) from None

  def given(self, name: str) -> bool:
    return name in self.explicit

  def over(self, overrides: Mapping[str, Any]) -> "Values":
    """These values with `overrides` on top (counted as given explicitly)."""
    return Values({**self.values, **overrides}, self.explicit | frozenset(overrides))

  def asked(self, name: str):
    """The value if given explicitly, else None (the library's "not asked": preset, then model)."""
    return self.values[name] if self.given(name) else None


PROBE_PRESET = "probe"  # --preset=probe: this checkpoint's probed vital layers


def edit_request(values: Values) -> EditRequest:
  """The edit flags (and a batch job's values over them) as the library's request: a flag not given
  is not asked (None), so the preset's and then the model's value apply."""
  fv = values
  layers = int_list(fv.vital_layers, "vital_layers") if fv.vital_layers is not None else None
  skips = int_list(fv.skip_layers, "skip_layers") if fv.skip_layers is not None else None
  schedule = ScheduleRequest(name=fv.schedule or None, weight=fv.schedule_weight, ramp=_float_pair(fv.ramp, "ramp"),
                             window=_float_pair(fv.window, "window"), layer_schedules=tuple(fv.layer_schedules))
  recording = None
  inverted = values.values.get("inverted_latent")
  if fv.input_audio or inverted:
    recording = RecordingRequest(path=fv.input_audio or None, start_s=fv.input_start_s, end_s=fv.input_end_s,
                                 downmix=fv.downmix, variant=fv.inversion, order=fv.inversion_order,
                                 sample_latent=fv.sample_latent, inverted_latent=inverted or None,
                                 kv_from_inversion=bool(values.values.get("kv_from_inversion", False)))
  return EditRequest(prompts=tuple(fv.prompts), negative_prompt=fv.negative_prompt,
                     audio_start_in_s=fv.audio_start_in_s, audio_end_in_s=values.asked("audio_end_in_s"),
                     num_inference_steps=fv.num_inference_steps, guidance_scale=fv.guidance_scale,
                     sampler=fv.sampler, sigma_schedule=fv.sigma_schedule, seed=fv.seed,
                     latent_length=fv.latent_length, preset=fv.preset, vital_layers=layers, skip_layers=skips,
                     schedule=schedule, allow_unbounded_schedule=fv.allow_unbounded_schedule,
                     injection_mode=fv.injection_mode, edit_all=fv.edit_all, recording=recording,
                     windows=window_settings(values), regions=region_list(fv.edit_region),
                     region_crossfade_s=fv.region_crossfade_s, **_method_fields(values))


def _method_fields(values: Values) -> dict:
  """The editing method's fields of a request (commands without the method flags: the defaults)."""
  given = values.values
  return {"method": given.get("edit_method", DEFAULTS.method), "init_noise_level": given.get("init_noise_level"),
          "flowedit_samples": given.get("flowedit_samples", DEFAULTS.flowedit_samples),
          "flowedit_start": given.get("flowedit_start", DEFAULTS.flowedit_start),
          "flowedit_source_guidance": given.get("flowedit_source_guidance")}


def edit_command_line(model_source: str, request: EditRequest) -> str:
  """The musickv-edit command that makes the same edit: the flags of what the request asks (the
  prompts first; what it leaves open is left out)."""
  args = ["musickv-edit", "--model", model_source, "--prompts", *request.prompts, *_asked_flags(request)]
  return " ".join(shlex.quote(a) for a in args)


def compare_command_line(model_source: str, request: EditRequest, methods: str, without_injection: bool) -> str:
  """The musickv-compare command of the same comparison: the edit's flags as musickv-edit's (the
  method of each variant comes from --methods, so the request's own is left out)."""
  base = dataclasses.replace(request, method=DEFAULTS.method, init_noise_level=None)
  methods = ",".join(part.strip() for part in methods.split(",") if part.strip())
  args = ["musickv-compare", "--model", model_source, "--prompts", *request.prompts, *_asked_flags(base),
          f"--methods={methods}"]
  if not without_injection:
    args.append("--nowithout_injection")
  return " ".join(shlex.quote(a) for a in args)


def _asked_flags(request: EditRequest) -> list[str]:
  """The flags of what an edit request asks, regions first, then by name (what it leaves open: none)."""
  asked = {"negative_prompt": request.negative_prompt, "audio_end_in_s": request.audio_end_in_s,
           "num_inference_steps": request.num_inference_steps, "guidance_scale": request.guidance_scale,
           "sampler": request.sampler, "preset": request.preset, "vital_layers": request.vital_layers,
           "skip_layers": request.skip_layers, "schedule": request.schedule.name}
  defaults = {"audio_start_in_s": DEFAULTS.audio_start_in_s, "sigma_schedule": DEFAULTS.sigma_schedule,
              "seed": DEFAULTS.seed, "latent_length": DEFAULTS.latent_length, "edit_all": DEFAULTS.edit_all,
              "injection_mode": DEFAULTS.injection_mode, "schedule_weight": DEFAULTS.schedule.weight,
              "ramp": DEFAULTS.schedule.ramp, "window": DEFAULTS.schedule.window}
  values = {"audio_start_in_s": request.audio_start_in_s, "sigma_schedule": request.sigma_schedule,
            "seed": request.seed, "latent_length": request.latent_length, "edit_all": request.edit_all,
            "injection_mode": request.injection_mode, "schedule_weight": request.schedule.weight,
            "ramp": request.schedule.ramp, "window": request.schedule.window}
  asked |= {"init_noise_level": request.init_noise_level,
            "flowedit_source_guidance": request.flowedit_source_guidance}
  defaults |= {"edit_method": DEFAULTS.method, "flowedit_samples": DEFAULTS.flowedit_samples,
               "flowedit_start": DEFAULTS.flowedit_start, "region_crossfade_s": DEFAULTS.region_crossfade_s}
  values |= {"edit_method": request.method, "flowedit_samples": request.flowedit_samples,
             "flowedit_start": request.flowedit_start, "region_crossfade_s": request.region_crossfade_s}
  asked |= {name: value for name, value in values.items() if value != defaults[name]}
  if request.recording is not None:
    recording, plain = request.recording, RecordingRequest()
    asked |= {"input_audio": recording.path, "inverted_latent": recording.inverted_latent}
    asked |= {flag: getattr(recording, field) for flag, field in (
        ("input_start_s", "start_s"), ("input_end_s", "end_s"), ("downmix", "downmix"), ("inversion", "variant"),
        ("inversion_order", "order"), ("sample_latent", "sample_latent"), ("kv_from_inversion", "kv_from_inversion"))
        if getattr(recording, field) != getattr(plain, field)}
  args = [f"--edit_region={start!r},{end!r}" for start, end in request.regions]
  for name, value in sorted(asked.items()):
    if value is None:
      continue
    if isinstance(value, bool):
      args.append(f"--{name}" if value else f"--no{name}")
    elif isinstance(value, (list, tuple)):
      args.append(f"--{name}={','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value)}")
    else:
      args.append(f"--{name}={value}")
  return args


def with_probed_preset(request: EditRequest, model: LoadedModel) -> EditRequest:
  """--preset=probe: this checkpoint's own preset, probed the first time (a long run: every layer
  over the shipped probe prompts), then read from the converted checkpoint's folder."""
  if request.preset != PROBE_PRESET:
    return request
  with progress_bar(1, "probing") as listener:
    preset = probing.checkpoint_preset(model, on_progress=listener,
                                       log=lambda message: print(f"info: {message}", file=sys.stderr, flush=True))
  return dataclasses.replace(request, preset=preset)


def length_for_model(given: float | None, preferred: float, config) -> float:
  """A length flag: as given, else `preferred` cut to the model's window (said in one line)."""
  if given is not None:
    return given
  if preferred > config.max_audio_seconds:
    print(f"info: {preferred:g} s is longer than this model's {config.max_audio_seconds:.2f} s window; using "
          f"{config.max_audio_seconds:.2f} s (--audio_end_in_s sets the length)", file=sys.stderr)
    return config.max_audio_seconds
  return preferred


# ----------------------------------------------------------------------------- recordings


def define_recording_flags(fv: Flags) -> None:
  """Flags of commands that read a recording (edit, invert)."""
  flags.DEFINE_string("input_audio", None, "A recording to edit: WAV, FLAC, MP3 or OGG (any sample rate).",
                      flag_values=fv)
  recording = RecordingRequest()
  flags.DEFINE_float("input_start_s", recording.start_s, "Start of the segment of --input_audio to use, seconds.", flag_values=fv)
  flags.DEFINE_float("input_end_s", None, "End of the segment of --input_audio (default: the end of the file).",
                     flag_values=fv)
  flags.DEFINE_bool("downmix", recording.downmix, "Mix recordings with more than 2 channels down to stereo.", flag_values=fv)
  flags.DEFINE_string("inversion", recording.variant, "reference: the paper's inverse scheduler, including its "
                      "timestep indexing; consistent: timestep and sigma of the same point.", flag_values=fv)
  flags.DEFINE_integer("inversion_order", recording.order, "2: DPM-Solver++(2M) inversion; 1: first-order (DDIM-like).",
                       flag_values=fv)
  flags.DEFINE_bool("sample_latent", recording.sample_latent, "Encode with a sample of the VAE posterior instead of its mean.",
                    flag_values=fv)
  flags.DEFINE_float("window_s", None, "A recording longer than this is edited over overlapping windows of this "
                     "length, as one diffusion process (default: the model's maximum, 47.55 s for SAO).",
                     flag_values=fv)
  flags.DEFINE_float("overlap_s", None, "Least overlap of neighbouring windows, seconds; their predictions are "
                     "crossfaded over it (default: 4 s, at most a quarter of the window).", flag_values=fv)
  flags.DEFINE_integer("windows_per_batch", None, "Windows evaluated as rows of one batch (default: as many as "
                       "--memory_budget_gib holds).", flag_values=fv)
  flags.DEFINE_float("memory_budget_gib", None, "Memory a long recording, or a device's batch of jobs, may use, "
                     "GiB (default: the device's memory; the host's RAM on CPU). A run that does not fit is refused "
                     "before it starts (musickv-benchmark --memory_plan shows the estimate).", flag_values=fv)


def load_recording(fv: Flags | Values, model: LoadedModel, *, job: str | None = None) -> LoadedAudio:
  """--input_audio -> LoadedAudio at the model's rate (warnings printed, naming the batch job if any)."""
  # longer than one window: edited over windows (pipeline.long_recording), up to the seconds conditioning's reach
  loaded = load_audio(fv.input_audio, sample_rate=model.config.sample_rate,
                      max_seconds=model.config.conditioner.seconds_max, start_s=fv.input_start_s, end_s=fv.input_end_s,
                      downmix=fv.downmix, channels=model.config.vae.audio_channels)
  for warning in loaded.warnings:
    print(f"warning: {f'job {job}: ' if job else ''}{warning}", file=sys.stderr)
  return loaded


def inversion_settings(fv: Flags | Values, prompt: str, steps: int, seconds_total: float | None) -> InversionSettings:
  return InversionSettings(prompt=prompt, num_inference_steps=steps, variant=fv.inversion, order=fv.inversion_order,
                           seconds_total=seconds_total, sample_latent=fv.sample_latent, seed=fv.seed)


def window_settings(values: Flags | Values) -> WindowSettings:
  """--window_s / --overlap_s / --windows_per_batch / --memory_budget_gib -> WindowSettings."""
  return WindowSettings(window_s=values.window_s, overlap_s=values.overlap_s,
                        windows_per_batch=values.windows_per_batch, memory_budget_gib=values.memory_budget_gib)


def absolute(path: str) -> Path:
  return Path(path).expanduser().absolute()
