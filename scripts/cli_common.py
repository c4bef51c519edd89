"""What every command line shares: flag syntax, one-line errors, model resolution, progress,
and writing outputs so that a failure leaves nothing half-written.

Flag syntax, as users of the original MusicKV command line type it: `--prompts A B C` (several
values after one flag; `--prompts=A` gives one), integer lists with commas (`--vital_layers=20,3,4`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import flags, logging

FLAGS = flags.FLAGS
MULTI_VALUE_FLAGS = ("prompts",)


class UsageError(Exception):
  """Bad command-line input: printed as one line, exit status 2."""


def expand_multi_value_flags(argv: Sequence[str], names: Sequence[str] = MULTI_VALUE_FLAGS) -> list[str]:
  """`--prompts A B` -> `--prompts=A --prompts=B`: values run until the next `--flag`."""
  out, current = [], None
  for arg in argv:
    if arg.startswith("--"):
      name = arg[2:].split("=", 1)[0]
      current = name if (name in names and "=" not in arg) else None
      if current is None:
        out.append(arg)
      continue
    if current is not None:
      out.append(f"--{current}={arg}")
    else:
      out.append(arg)
  return out


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing with one-line errors instead of a usage dump."""
  try:
    return FLAGS(expand_multi_value_flags(argv))
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run_main(main: Callable[[], None]) -> Callable[[list[str]], int]:
  """Wraps a script body: known errors become one line on stderr and a non-zero exit."""
  def wrapped(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]} (values with spaces need quotes)", file=sys.stderr)
      return 2
    quiet_libraries()
    enable_compilation_cache()
    from convert.tensors import ConversionError
    from musickv_jax.audio import AudioError
    from musickv_jax.checkpoint import CheckpointError
    from musickv_jax.config import ConfigError
    from musickv_jax.pipeline import GenerationError
    from musickv_jax.text import TokenizerError
    try:
      main()
    except UsageError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    except (ConversionError, CheckpointError, GenerationError, AudioError, ConfigError, TokenizerError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    except OSError as e:  # file-system trouble the checks could not foresee (disk full, permissions)
      where = f": {e.filename}" if e.filename else ""
      print(f"error: {e.strerror or e}{where}", file=sys.stderr)
      return 1
    return 0
  return wrapped


def enable_compilation_cache() -> None:
  """Reuse compiled programs across runs (JAX's persistent compilation cache) under
  $MUSICKV_COMPILATION_CACHE, default <cache>/xla; MUSICKV_COMPILATION_CACHE=0 turns it off.
  (The sampling loops report progress through host callbacks, which JAX does not cache.)"""
  target = os.environ.get("MUSICKV_COMPILATION_CACHE", str(cache_root() / "xla"))
  if target in ("", "0"):
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", target)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def quiet_libraries() -> None:
  logging.set_verbosity(logging.WARNING)
  import logging as std_logging
  for name in ("absl", "orbax", "jax._src.xla_bridge"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def int_list(values: Sequence[str], flag: str) -> list[int]:
  out = []
  for v in values:
    try:
      out.append(int(v))
    except ValueError:
      raise UsageError(f"--{flag} takes comma-separated integers, got {v!r}") from None
  return out


# ----------------------------------------------------------------------------- models


def cache_root() -> Path:
  return Path(os.environ.get("MUSICKV_CACHE", Path.home() / ".cache" / "musickv-jax"))


def _fingerprint(path: Path) -> str:
  """Identity of an unconverted checkpoint: where it is and the size / mtime of its files."""
  h = hashlib.sha256(str(path.resolve()).encode())
  files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
  for f in files:
    st = f.stat()
    h.update(f"{f.relative_to(path.parent)}:{st.st_size}:{int(st.st_mtime)}".encode())
  return h.hexdigest()[:16]


def resolve_model(model: str | None, *, hf_token: str | None = None, t5: str | None = None,
                  dtype: str | None = None, log=print):
  """--model: a converted checkpoint, or an unconverted diffusers folder / stable-audio-tools file /
  hub id, which is converted once into the cache ($MUSICKV_CACHE, default ~/.cache/musickv-jax)."""
  from convert.pipeline import convert_checkpoint
  from convert.sources import looks_like_hub_id
  from musickv_jax.checkpoint import is_converted_checkpoint, load_model

  if not model:
    raise UsageError("--model is required: a converted checkpoint directory, a diffusers / stable-audio-tools "
                     "checkpoint, or a hub id")
  if looks_like_hub_id(model):
    target = cache_root() / "converted" / re.sub(r"[^\w.-]", "_", model)
    if not is_converted_checkpoint(target):
      log(f"converting {model} from the hub into {target}")
      convert_checkpoint(model, target, hf_token=hf_token, t5_dir=t5, overwrite=True, log=log)
    return load_model(target, dtype=dtype)
  path = Path(model).expanduser()
  if not path.exists():
    raise UsageError(f"--model {model}: no such file or directory")
  if is_converted_checkpoint(path):
    return load_model(path, dtype=dtype)
  target = cache_root() / "converted" / f"{path.name}-{_fingerprint(path)}"
  if not is_converted_checkpoint(target):
    log(f"{path} is not converted yet; converting it once into {target}")
    convert_checkpoint(path, target, t5_dir=t5, overwrite=True, log=log)
  return load_model(target, dtype=dtype)


# ----------------------------------------------------------------------------- progress and outputs


def progress_bar(total: int, description: str):
  """A tqdm bar on stderr; returns (listener for sampler.on_step, close)."""
  from tqdm import tqdm

  bar = tqdm(total=total, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True,
             disable=not sys.stderr.isatty() and os.environ.get("MUSICKV_PROGRESS") != "1")

  def listener(step: int, total_steps: int) -> None:
    bar.update(step - bar.n)

  return listener, bar.close


def check_output_dir(path: str) -> Path:
  """The output folder must exist or be creatable, and be writable. Checked before any work by
  really creating it and a probe file, then removing what the check created."""
  out = Path(path).expanduser().absolute()
  missing = []
  probe = out
  while not probe.exists():
    missing.append(probe)
    probe = probe.parent
  try:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
      pass
  except OSError as e:
    raise UsageError(f"--output_path {path}: {probe} is not a writable directory ({e.strerror})") from None
  finally:
    for created in missing:  # deepest first
      try:
        created.rmdir()
      except OSError:
        pass
  return out


class OutputSet:
  """Collects output files as temporaries and renames them into place together at `commit()`:
  a run that fails part-way leaves no partial outputs under the final names."""

  def __init__(self, directory: Path):
    self.directory = directory
    self._pending: list[tuple[Path, Path]] = []

  def __enter__(self):
    self.directory.mkdir(parents=True, exist_ok=True)
    return self

  def path(self, name: str | Path) -> Path:
    """A temporary path for output `name` (relative to the directory, or a path of its own)."""
    final = self.directory / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    self._pending.append((tmp, final))
    return tmp

  def commit(self) -> list[Path]:
    """Renames every output into place and announces it."""
    for tmp, final in self._pending:
      os.replace(tmp, final)
      print(f"wrote {final}")
    done = [final for _, final in self._pending]
    self._pending = []
    return done

  def __exit__(self, exc_type, exc, tb):
    for tmp, _ in self._pending:
      tmp.unlink(missing_ok=True)
    return False


def write_json(path: Path, data: dict) -> None:
  path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_npy(path: Path, array) -> None:
  import numpy as np
  with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
    np.save(f, np.asarray(array), allow_pickle=False)


def command_line() -> str:
  return " ".join(shlex.quote(a) for a in sys.argv)


def slug(text: str, limit: int = 40) -> str:
  s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
  return s[:limit].rstrip("-") or "prompt"


# ----------------------------------------------------------------------------- generation flags


def define_generation_flags(audio_end_default: float | None, output_default: str = "outputs/") -> None:
  """The flags shared by generate.py and edit.py (DESIGN.md 4b)."""
  flags.DEFINE_string("model", None, "Converted checkpoint dir, or a diffusers / stable-audio-tools checkpoint "
                      "or hub id (converted once into a cache).")
  flags.DEFINE_string("hf_token", None, "Hugging Face token, for --model given as a gated hub id.")
  flags.DEFINE_string("t5", None, "T5 folder, when --model is an unconverted stable-audio-tools file.")
  flags.DEFINE_multi_string("prompts", [], "Prompts: --prompts \"first\" \"second\" ...")
  flags.DEFINE_string("negative_prompt", None, "Negative prompt for the unconditional branch.")
  flags.DEFINE_float("audio_start_in_s", 0.0, "Start of the returned audio, seconds.")
  flags.DEFINE_float("audio_end_in_s", audio_end_default, "End of the returned audio, seconds "
                     "(default: the model's maximum)" if audio_end_default is None else "End of the audio, seconds.")
  flags.DEFINE_integer("num_inference_steps", 100, "Sampling steps.")
  flags.DEFINE_float("guidance_scale", 7.0, "Classifier-free guidance scale (1 disables guidance).")
  flags.DEFINE_string("sampler", "dpmpp-2m", "dpmpp-2m (deterministic), dpmpp-2m-sde, or dpmpp-1.")
  flags.DEFINE_string("sigma_schedule", "exponential", "exponential (the references) or karras.")
  flags.DEFINE_integer("seed", 0, "Seed of the initial noise (and of the SDE sampler's noise).")
  flags.DEFINE_string("init_latents", None, ".npy of the exact initial latents x_T, shape (n_prompts, C, T), "
                      "already at the first sigma; used as given.")
  flags.DEFINE_string("save_latents", None, "Write the final latents of all prompts to this .npy.")
  flags.DEFINE_string("latent_length", "full", "full: the model's whole window, trimmed after decoding (what the "
                      "references do); fit: just long enough for --audio_end_in_s (faster).")
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 for the DiT and VAE.")
  flags.DEFINE_string("output_path", output_default, "Directory for the outputs.")
  flags.DEFINE_string("wav_subtype", "FLOAT", "WAV sample format: FLOAT, PCM_16 or PCM_24.")


def settings_from_flags():
  from musickv_jax.pipeline import GenerationSettings

  return GenerationSettings(
      prompts=tuple(FLAGS.prompts), negative_prompt=FLAGS.negative_prompt, audio_start_in_s=FLAGS.audio_start_in_s,
      audio_end_in_s=FLAGS.audio_end_in_s, num_inference_steps=FLAGS.num_inference_steps,
      guidance_scale=FLAGS.guidance_scale, sampler=FLAGS.sampler, sigma_schedule=FLAGS.sigma_schedule,
      seed=FLAGS.seed, latent_length=FLAGS.latent_length)


def check_common_flags() -> None:
  from musickv_jax.audio import WAV_SUBTYPES

  if FLAGS.dtype not in ("float32", "bfloat16"):
    raise UsageError(f"--dtype must be float32 or bfloat16, got {FLAGS.dtype!r}")
  if FLAGS.wav_subtype not in WAV_SUBTYPES:
    raise UsageError(f"--wav_subtype must be one of {WAV_SUBTYPES}, got {FLAGS.wav_subtype!r}")
  if FLAGS.save_latents and not FLAGS.save_latents.endswith(".npy"):
    raise UsageError(f"--save_latents must name a .npy file, got {FLAGS.save_latents!r}")
  if FLAGS.save_latents:
    check_output_dir(str(Path(FLAGS.save_latents).expanduser().parent))


def load_init_latents():
  import numpy as np

  if not FLAGS.init_latents:
    return None
  path = Path(FLAGS.init_latents).expanduser()
  if not path.is_file():
    raise UsageError(f"--init_latents {path}: file not found")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise UsageError(f"--init_latents {path}: not a readable .npy file ({e})") from None


# ----------------------------------------------------------------------------- real audio


def define_audio_flags() -> None:
  """Flags of scripts that read a recording (edit.py, invert.py)."""
  flags.DEFINE_string("input_audio", None, "A recording to edit: WAV, FLAC, MP3 or OGG (any sample rate).")
  flags.DEFINE_float("input_start_s", 0.0, "Start of the segment of --input_audio to use, seconds.")
  flags.DEFINE_float("input_end_s", None, "End of the segment of --input_audio (default: the end of the file).")
  flags.DEFINE_bool("downmix", False, "Mix recordings with more than 2 channels down to stereo.")
  flags.DEFINE_string("inversion", "reference", "reference: the paper's inverse scheduler, including its "
                      "timestep indexing; consistent: timestep and sigma of the same point.")
  flags.DEFINE_integer("inversion_order", 2, "2: DPM-Solver++(2M) inversion; 1: first-order (DDIM-like).")
  flags.DEFINE_bool("sample_latent", False, "Encode with a sample of the VAE posterior instead of its mean.")


def load_recording(model):
  """--input_audio -> LoadedAudio at the model's rate (warnings printed)."""
  from musickv_jax.audio import load_audio

  loaded = load_audio(FLAGS.input_audio, sample_rate=model.config.sample_rate,
                      max_seconds=model.config.max_audio_seconds, start_s=FLAGS.input_start_s,
                      end_s=FLAGS.input_end_s, downmix=FLAGS.downmix, channels=model.config.vae.audio_channels)
  for warning in loaded.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  return loaded


def inversion_settings(prompt: str, steps: int, seconds_total: float | None):
  from musickv_jax.pipeline import InversionSettings

  if FLAGS.inversion_order not in (1, 2):
    raise UsageError(f"--inversion_order must be 1 or 2, got {FLAGS.inversion_order}")
  return InversionSettings(prompt=prompt, num_inference_steps=steps, variant=FLAGS.inversion,
                           order=FLAGS.inversion_order, seconds_total=seconds_total,
                           sample_latent=FLAGS.sample_latent, seed=FLAGS.seed)
