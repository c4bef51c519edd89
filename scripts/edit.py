"""MusicKV editing of generated audio (modelled on the authors' run_stable_audio.py).

  python scripts/edit.py --model ckpt/sao --prompts "Piano solo" "Acoustic guitar, country, soft"

The first prompt describes the source, the second the edit. Further prompts are generated
plainly, as the reference does, unless --edit_all makes each of them an edit of the same
source. Writes source.wav, edit_1.wav, ... (prompt_N.wav for plain generations), edit.json with
every setting, and spectrograms.png comparing the source with the edits.
"""

from __future__ import annotations

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
    generation = generation.__class__(**{**vars(generation), "guidance_scale": float(preset["guidance_scale"])})
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


def output_names(roles: list[str]) -> list[str]:
  names, edits = [], 0
  for i, role in enumerate(roles):
    if role == "source":
      names.append("source")
    elif role == "edit":
      edits += 1
      names.append(f"edit_{edits}")
    else:
      names.append(f"prompt_{i + 1}")
  return names


def main() -> None:
  from musickv_jax import pipeline, spectrogram
  from musickv_jax.audio import save_wav

  settings, schedule_name = edit_settings_from_flags()
  cli_common.check_common_flags()
  out_dir = cli_common.check_output_dir(FLAGS.output_path)
  init_latents = cli_common.load_init_latents()
  model = cli_common.resolve_model(FLAGS.model, hf_token=FLAGS.hf_token, t5=FLAGS.t5, dtype=FLAGS.dtype)
  pipeline.validate_edit(settings, model.config)
  if init_latents is not None:
    pipeline.check_init_latents(init_latents, len(settings.generation.prompts), settings.generation, model.config)

  steps = settings.generation.num_inference_steps
  passes = 2 if settings.injection_mode == "cached" else 1
  listener, close = cli_common.progress_bar(passes * steps, "editing")
  start = time.perf_counter()
  try:
    result = pipeline.edit(model, settings, init_latents=init_latents, on_step=listener)
  finally:
    close()
  elapsed = time.perf_counter() - start

  gen = settings.generation
  names = output_names(result.roles)
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
                  for name, role, prompt in zip(names, result.roles, gen.prompts)],
      "seconds": round(elapsed, 2),
  }
  with cli_common.OutputSet(out_dir) as outputs:
    for name, audio in zip(names, result.audio):
      save_wav(outputs.path(f"{name}.wav"), audio, result.sample_rate, FLAGS.wav_subtype)
    cli_common.write_json(outputs.path("edit.json"), record)
    shown = [i for i, role in enumerate(result.roles) if role in ("source", "edit")]
    spectrogram.save_comparison(outputs.path("spectrograms.png"), [result.audio[i] for i in shown],
                                [f"{names[i]}: {gen.prompts[i]}" for i in shown], result.sample_rate)
    if FLAGS.save_latents:
      cli_common.write_npy(outputs.path(Path(FLAGS.save_latents).expanduser().absolute()), result.latents)
    written = outputs.commit()
  for path in written:
    print(f"wrote {path}")
  print(f"edited {len(gen.prompts)} prompt(s) in {elapsed:.1f} s")


if __name__ == "__main__":
  define_edit_flags()
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
