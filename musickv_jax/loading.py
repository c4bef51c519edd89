"""Loading a model from whatever the user has: a converted checkpoint, an unconverted diffusers
folder or stable-audio-tools file, or a Hugging Face hub id. Anything unconverted is converted
once into a cache (`$MUSICKV_CACHE`, default ~/.cache/musickv-jax) and loaded from there after.

  model = load_model("ckpt/sao")                                   # converted
  model = load_model("/data/stable-audio-open-1.0")                # diffusers folder, converted once
  model = load_model("/data/model.safetensors", t5="/data/t5-base")
  model = load_model("stabilityai/stable-audio-open-1.0", hf_token="hf_...")
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import jax

from musickv_jax.checkpoint import LoadedModel, is_converted_checkpoint, load_converted
from musickv_jax.config import ATTENTION_IMPLEMENTATIONS, to_jnp_dtype
from musickv_jax.convert.pipeline import convert_checkpoint
from musickv_jax.convert.sources import is_hub_id
from musickv_jax.errors import ConversionError, SettingsError


def default_cache_dir() -> Path:
  return Path(os.environ.get("MUSICKV_CACHE") or Path.home() / ".cache" / "musickv-jax")


def _fingerprint(path: Path) -> str:
  """Identity of an unconverted checkpoint: where it is and the size / mtime of its files."""
  h = hashlib.sha256(str(path.resolve()).encode())
  files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
  for f in files:
    st = f.stat()
    h.update(f"{f.relative_to(path.parent)}:{st.st_size}:{int(st.st_mtime)}".encode())
  return h.hexdigest()[:16]


def load_model(source: str | Path, *, hf_token: str | None = None, t5: str | Path | None = None,
               dtype: str | None = None, attention: str | None = None, cache_dir: str | Path | None = None,
               device: jax.Device | None = None, log: Callable[[str], None] = print) -> LoadedModel:
  """A model from a converted checkpoint, an unconverted checkpoint or a hub id (see the module
  docstring). t5: the T5 folder an unconverted stable-audio-tools file needs. dtype: cast the
  DiT and VAE ('float32', 'bfloat16'); None keeps what was stored. attention: 'auto' (the default:
  the fastest exact path for the backend), 'xla', 'blocked', 'cudnn' or 'splash'."""
  text = str(source).strip()
  if not text:
    raise SettingsError("{field} is empty; give a converted checkpoint directory, a diffusers / "
                        "stable-audio-tools checkpoint, or a hub id", field="model")
  if dtype is not None:
    to_jnp_dtype(dtype)  # a bad dtype fails now, not after the parameters are read
  if attention is not None and attention not in ATTENTION_IMPLEMENTATIONS:
    raise SettingsError(f"{{field}} must be one of {ATTENTION_IMPLEMENTATIONS}, got {attention!r}", field="attention")
  cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
  if is_hub_id(text):
    target = cache / "converted" / re.sub(r"[^\w.-]", "_", text)
    if not is_converted_checkpoint(target):
      log(f"converting {text} from the hub into {target}")
      try:
        convert_checkpoint(text, target, hf_token=hf_token, t5_dir=t5, overwrite=True, log=log)
      except ConversionError as e:  # say both readings: a local path that is not there, a hub id that failed
        if e.field == "source":  # the download failed: read_source's message already says both
          raise ConversionError(e.template, field="model", mentions=e.mentions) from None
        inner = e.template.replace("{field}", "{" + e.field + "}") if e.field else e.template
        raise ConversionError(f"{{field}} {text}: no such local file or directory, and as a Hugging Face hub id it "
                              "could not be used: " + inner, field="model",
                              mentions=e.mentions + ((e.field,) if e.field else ())) from None
    return load_converted(target, dtype=dtype, attention=attention, device=device)
  path = Path(text).expanduser()
  if not path.exists():
    raise SettingsError(f"{{field}} {text}: no such file or directory", field="model")
  if is_converted_checkpoint(path):
    return load_converted(path, dtype=dtype, attention=attention, device=device)
  target = cache / "converted" / f"{path.name}-{_fingerprint(path)}"
  if not is_converted_checkpoint(target):
    log(f"{path} is not converted yet; converting it once into {target}")
    convert_checkpoint(path, target, t5_dir=t5, overwrite=True, log=log)
  return load_converted(target, dtype=dtype, attention=attention, device=device)
