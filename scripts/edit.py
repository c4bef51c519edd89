"""MusicKV editing (modelled on the authors' run_stable_audio.py / run_stable_audio_invert.py).

  python scripts/edit.py --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"
  python scripts/edit.py --model ckpt/sao --input_audio song.mp3 --prompts "clean indie guitar" \
      "classical piano solo, excited"

With --input_audio (or --inverted_latent from scripts/invert.py) the first prompt describes the
recording: it is inverted with that description, the source is regenerated from the inverted
latent with guidance 1 (source_reconstruction.wav: what inversion kept) and the edits start from
the same latent; input.wav is the recording as the model heard it (segment, stereo, 44.1 kHz).

The first prompt describes the source, the second the edit. Further prompts are generated
plainly, as the reference does, unless --edit_all makes each of them an edit of the same
source. Writes source.wav, edit_1.wav, ... (prompt_N.wav for plain generations), edit.json with
every setting, and spectrograms.png comparing the source with the edits.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

FLAGS = flags.FLAGS
PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "presets"


def define_edit_flags() -> None:
  cli_common.define_generation_flags(audio_end_default=15.0)
  flags.DEFINE_string("preset", "musickv", "Editing preset from configs/presets/ (vital layers, skip layers, "
                      "guidance, time-varying); flags given explicitly override it.")
  flags.DEFINE_list("vital_layers", None, "DiT blocks whose self-attention K/V come from the source "
                    "(default from the preset: 20,3,4).")
  flags.DEFINE_list("skip_layers", None, "DiT blocks whose self-attention is bypassed for every sample (probing).")
  flags.DEFINE_string("schedule", None, "linear_ramp (the reference's time-varying schedule), constant, cosine, "
                      "window, per_layer, or a .npy file of shape (steps, n_vital_layers[, n_edits]). Default: "
                      "linear_ramp if the preset is time-varying, else constant.")
  flags.DEFINE_float("schedule_weight", 1.0, "Weight of the constant and window schedules.")
  flags.DEFINE_list("ramp", ["0", "1"], "FROM,TO values of the linear_ramp / cosine schedules.")
  flags.DEFINE_list("window", ["0", "1"], "START,END fractions of the steps for the window schedule.")
  flags.DEFINE_list("layer_schedules", [], "per_layer: one schedule name per vital layer.")
  flags.DEFINE_bool("allow_unbounded_schedule", False, "Accept schedule values outside [0, 1].")
  flags.DEFINE_string("injection_mode", "joint", "joint (one batch) or cached (record the source, then edit).")
  flags.DEFINE_bool("edit_all", False, "Every prompt after the first is an edit of the same source.")
  cli_common.define_audio_flags()
  flags.DEFINE_string("inverted_latent", None, "inverted_latent.npy from scripts/invert.py: edit that recording "
                      "without inverting it again.")
  flags.DEFINE_bool("kv_from_inversion", False, "Real audio: take the source K/V recorded during inversion "
                    "instead of re-running the source branch (faster; no source_reconstruction.wav).")


def load_preset(name: str) -> dict:
  path = PRESET_DIR / f"{name}.json"
  if not path.is_file():
    available = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
    raise cli_common.UsageError(f"--preset {name!r} not found; available: {', '.join(available)}")
  return json.loads(path.read_text())


def explicit(name: str) -> bool:
  return FLAGS[name].present


def float_pair(values, flag: str) -> tuple[float, float]:
  try:
    a, b = (float(v) for v in values)
  except ValueError:
    raise cli_common.UsageError(f"--{flag} takes two comma-separated numbers, got {','.join(values)!r}") from None
  return a, b


def build_schedule(name: str, steps: int, n_layers: int):
  from musickv_jax.editing import schedules as kv

  try:
    if name.endswith(".npy"):
      return kv.load_npy(name)
    if name == "per_layer":
      if len(FLAGS.layer_schedules) != n_layers:
        raise cli_common.UsageError(f"--schedule=per_layer needs --layer_schedules with one name per vital layer "
                                    f"({n_layers}), got {len(FLAGS.layer_schedules)}")
      return kv.per_layer([build_schedule(n, steps, 1) for n in FLAGS.layer_schedules])
    params = {}
    if name == "constant":
      params = {"weight": FLAGS.schedule_weight}
    elif name in ("linear_ramp", "cosine"):
      params = dict(zip(("start", "end"), float_pair(FLAGS.ramp, "ramp")))
    elif name == "window":
      params = dict(zip(("start", "end"), float_pair(FLAGS.window, "window")), weight=FLAGS.schedule_weight)
    return kv.by_name(name, steps, n_layers, **params)
  except kv.ScheduleError as e:
    raise cli_common.UsageError(str(e)) from None


def edit_settings_from_flags():
  from musickv_jax.pipeline import EditSettings

  preset = load_preset(FLAGS.preset)
  generation = cli_common.settings_from_flags()
  if not explicit("guidance_scale") and "guidance_scale" in preset:
    generation = dataclasses.replace(generation, guidance_scale=float(preset["guidance_scale"]))
  layers = tuple(cli_common.int_list(FLAGS.vital_layers, "vital_layers")) if FLAGS.vital_layers is not None \
      else tuple(preset.get("vital_layers", (20, 3, 4)))
  skips = tuple(cli_common.int_list(FLAGS.skip_layers, "skip_layers")) if FLAGS.skip_layers is not None \
      else tuple(preset.get("skip_layers", ()))
  schedule_name = FLAGS.schedule or ("linear_ramp" if preset.get("time_varying", True) else "constant")
  if generation.num_inference_steps < 1:
    raise cli_common.UsageError(f"--num_inference_steps must be at least 1, got {generation.num_inference_steps}")
  schedule = build_schedule(schedule_name, generation.num_inference_steps, max(len(layers), 1))
  return EditSettings(generation=generation, vital_layers=layers, skip_layers=skips, schedule=schedule,
                      injection_mode=FLAGS.injection_mode, edit_all=FLAGS.edit_all,
                      allow_unbounded_schedule=FLAGS.allow_unbounded_schedule), schedule_name


def output_names(roles: list[str], real_audio: bool = False) -> list[str]:
  names, edits = [], 0
  offset = 0 if roles[0] == "source" else 1  # without a source row (kv_from_inversion) prompts start at 2
  for i, role in enumerate(roles):
    if role == "source":
      names.append("source_reconstruction" if real_audio else "source")
    elif role == "edit":
      edits += 1
      names.append(f"edit_{edits}")
    else:
      names.append(f"prompt_{i + 1 + offset}")
  return names


def real_audio_mode() -> bool:
  return bool(FLAGS.input_audio or FLAGS.inverted_latent)


def load_inverted_latent(model, recording):
  """--inverted_latent (with its sidecar) -> (latent (1, C, T), n_samples), checked against the model
  and, when given, against --input_audio's length."""
  import json

  import numpy as np

  path = Path(FLAGS.inverted_latent).expanduser()
  if not path.is_file():
    raise cli_common.UsageError(f"--inverted_latent {path}: file not found")
  try:
    latent = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise cli_common.UsageError(f"--inverted_latent {path}: not a readable .npy file ({e})") from None
  cfg = model.config
  if latent.ndim != 3 or latent.shape[0] != 1 or latent.shape[1] != cfg.dit.io_channels or \
     not 0 < latent.shape[2] <= cfg.dit.sample_size:
    raise cli_common.UsageError(f"--inverted_latent has shape {latent.shape}; this model needs (1, "
                                f"{cfg.dit.io_channels}, T) with T <= {cfg.dit.sample_size}: invert with this model")
  if not np.all(np.isfinite(latent)):
    raise cli_common.UsageError("--inverted_latent contains NaN or infinite values")
  sidecar = path.with_suffix(".json")
  n_samples = latent.shape[2] * cfg.vae.hop_length
  if sidecar.is_file():
    n_samples = int(json.loads(sidecar.read_text()).get("n_samples", n_samples))
  if recording is not None:
    frames = -(-recording.audio.shape[-1] // cfg.vae.hop_length)
    if frames != latent.shape[2]:
      raise cli_common.UsageError(f"--inverted_latent has {latent.shape[2]} frames but --input_audio (this "
                                  f"segment) needs {frames}; invert this recording / segment again")
    n_samples = recording.audio.shape[-1]
  return latent.astype(np.float32), n_samples


def run_real_audio(model, settings):
  """Inverts --input_audio (or reads --inverted_latent) and edits it.
  Returns (result, recording or None, inversion)."""
  from musickv_jax import pipeline

  gen = settings.generation
  recording = cli_common.load_recording(model) if FLAGS.input_audio else None
  seconds_total = gen.audio_end_in_s  # None: the model's maximum, as the reference
  inv_settings = cli_common.inversion_settings(gen.prompts[0], gen.num_inference_steps, seconds_total)
  record_layers = tuple(settings.vital_layers) if FLAGS.kv_from_inversion else ()
  if FLAGS.inverted_latent:
    if FLAGS.kv_from_inversion:
      raise cli_common.UsageError("--kv_from_inversion needs --input_audio (the K/V are recorded while inverting)")
    latent, n_samples = load_inverted_latent(model, recording)
    inversion = pipeline.Inversion(inverted=latent, encoded=None, n_samples=n_samples, settings=inv_settings)
  else:
    frames = -(-recording.audio.shape[-1] // model.config.vae.hop_length)
    pipeline.validate_inversion(inv_settings, model.config, frames)
    print(f"inverting {recording.duration_s:.2f} s of {FLAGS.input_audio} ({FLAGS.inversion} inversion, "
          f"{gen.num_inference_steps} steps)")
    listener, close = cli_common.progress_bar(gen.num_inference_steps, "inverting")
    try:
      inversion = pipeline.invert_audio(model, recording.audio, inv_settings, record_layers=record_layers,
                                        on_step=listener)
    finally:
      close()
  listener, close = cli_common.progress_bar(gen.num_inference_steps, "editing")
  try:
    result = pipeline.edit_recording(model, inversion, settings, kv_from_inversion=FLAGS.kv_from_inversion,
                                     on_step=listener)
  finally:
    close()
  return result, recording, inversion


def main() -> None:
  from musickv_jax import pipeline, spectrogram
  from musickv_jax.audio import save_wav

  settings, schedule_name = edit_settings_from_flags()
  if real_audio_mode() and not explicit("audio_end_in_s"):
    # Real audio: seconds_total defaults to the model's maximum (the reference); the output is
    # the recording's own length.
    settings = dataclasses.replace(settings, generation=dataclasses.replace(settings.generation,
                                                                            audio_end_in_s=None))
  if real_audio_mode() and len(settings.generation.prompts) < 2:
    raise cli_common.UsageError("only the source description was given; add at least one edit prompt: "
                                "--prompts \"DESCRIPTION OF THE RECORDING\" \"EDIT\" [MORE ...]")
  cli_common.check_common_flags()
  out_dir = cli_common.check_output_dir(FLAGS.output_path)
  init_latents = cli_common.load_init_latents()
  if real_audio_mode() and init_latents is not None:
    raise cli_common.UsageError("--init_latents cannot be combined with --input_audio / --inverted_latent "
                                "(the inverted recording is the initial latent)")
  if FLAGS.kv_from_inversion and not real_audio_mode():
    raise cli_common.UsageError("--kv_from_inversion applies to real-audio edits (--input_audio)")
  model = cli_common.resolve_model(FLAGS.model, hf_token=FLAGS.hf_token, t5=FLAGS.t5, dtype=FLAGS.dtype)
  pipeline.validate_edit(settings, model.config)
  if init_latents is not None:
    pipeline.check_init_latents(init_latents, len(settings.generation.prompts), settings.generation, model.config)

  steps = settings.generation.num_inference_steps
  start = time.perf_counter()
  recording = inversion = None
  if real_audio_mode():
    result, recording, inversion = run_real_audio(model, settings)
  else:
    passes = 2 if settings.injection_mode == "cached" else 1
    listener, close = cli_common.progress_bar(passes * steps, "editing")
    try:
      result = pipeline.edit(model, settings, init_latents=init_latents, on_step=listener)
    finally:
      close()
  elapsed = time.perf_counter() - start

  gen = settings.generation
  names = output_names(result.roles, real_audio=real_audio_mode())
  prompts = list(gen.prompts) if len(result.roles) == len(gen.prompts) else list(gen.prompts[1:])
  record = {
      "command": cli_common.command_line(), "model": str(model.path), "model_name": model.config.name,
      "dtype": FLAGS.dtype, "preset": FLAGS.preset,
      "settings": vars(gen) | {"prompts": list(gen.prompts)},
      "editing": {"vital_layers": list(settings.vital_layers), "skip_layers": list(settings.skip_layers),
                  "schedule": schedule_name, "schedule_values": result.schedule.tolist(),
                  "injection_mode": settings.injection_mode, "edit_all": settings.edit_all},
      "resolved": {"audio_end_in_s": gen.resolved_end(model.config), "latent_frames": result.latent_frames,
                   "sample_rate": result.sample_rate, "shared_initial_noise": FLAGS.init_latents is None},
      "init_latents": str(Path(FLAGS.init_latents).resolve()) if FLAGS.init_latents else None,
      "outputs": [{"file": f"{name}.wav", "role": role, "prompt": prompt}
                  for name, role, prompt in zip(names, result.roles, prompts)],
      "seconds": round(elapsed, 2),
  }
  if real_audio_mode():
    record["real_audio"] = {
        "input_audio": str(Path(FLAGS.input_audio).resolve()) if FLAGS.input_audio else None,
        "inverted_latent": str(Path(FLAGS.inverted_latent).resolve()) if FLAGS.inverted_latent else None,
        "input_start_s": FLAGS.input_start_s, "input_end_s": FLAGS.input_end_s,
        "source_sample_rate": recording.source_rate if recording else None,
        "inversion": vars(inversion.settings), "kv_from_inversion": FLAGS.kv_from_inversion,
        "n_samples": inversion.n_samples, "source_guidance": 1.0}
  panels = []
  if recording is not None:
    panels.append((recording.audio, f"input: {FLAGS.input_audio}"))
  panels += [(result.audio[i], f"{names[i]}: {prompts[i]}") for i, role in enumerate(result.roles)
             if role in ("source", "edit")]
  with cli_common.OutputSet(out_dir) as outputs:
    for name, audio in zip(names, result.audio):
      save_wav(outputs.path(f"{name}.wav"), audio, result.sample_rate, FLAGS.wav_subtype)
    if recording is not None:
      save_wav(outputs.path("input.wav"), recording.audio, result.sample_rate, FLAGS.wav_subtype)
    cli_common.write_json(outputs.path("edit.json"), record)
    spectrogram.save_comparison(outputs.path("spectrograms.png"), [p[0] for p in panels], [p[1] for p in panels],
                                result.sample_rate)
    if FLAGS.save_latents:
      cli_common.write_npy(outputs.path(Path(FLAGS.save_latents).expanduser().absolute()), result.latents)
    outputs.commit()
  print(f"edited {len(gen.prompts)} prompt(s) in {elapsed:.1f} s")


if __name__ == "__main__":
  define_edit_flags()
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
