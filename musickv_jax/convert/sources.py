"""Finding and reading the checkpoint layouts users have.

  diffusers:          a StableAudioPipeline folder (model_index.json, transformer/, vae/,
                      text_encoder/, projection_model/, tokenizer/, scheduler/)
  stable-audio-tools: model.safetensors (or model.ckpt) + model_config.json, with T5 from a
                      separate Hugging Face folder (--t5); Stability's single-file Stable Audio 3
                      (its T5Gemma in t5gemma-b-b-ul2/ beside it) goes to convert/sa3_single_file.py
  hub:                a repo id, downloaded with huggingface_hub, then read as diffusers

Each reader returns a `SourceCheckpoint`: our ModelConfig, one state dict per component,
and where the tokenizer lives.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
from huggingface_hub import snapshot_download

from musickv_jax.config import (
  NUMBERS,
  OBJECTIVES,
  QK_NORMS,
  ConditionerConfig,
  DiffusionConfig,
  DistributionShift,
  DiTConfig,
  ModelConfig,
  OobleckConfig,
  T5Config,
)
from musickv_jax.convert.layout import SourceCheckpoint, text_encoder_folders
from musickv_jax.convert.sa3_single_file import is_sa3_single_file, read_sa3_single_file
from musickv_jax.convert.sa3_sources import is_sa3_index, read_sa3_diffusers
from musickv_jax.convert.tables import DIFFUSERS, SAT, t5_ignored
from musickv_jax.convert.tensors import ConversionError, read_sharded, read_weights
from musickv_jax.errors import ConfigError

DIFFUSERS_PARTS = ("transformer", "vae", "text_encoder", "projection_model", "tokenizer")
SAT_WEIGHT_FILES = ("model.safetensors", "model.ckpt")
_UNSET_MAX_LENGTH = 100_000  # tokenizers without a limit report ~1e30


# ----------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> dict:
  if not path.is_file():
    raise ConversionError(f"{path}: file not found")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _int(config: dict, key: str, where: str, default=None) -> int:
  """Configs written by some tools store ints as floats (1024.0): accept those, refuse 10.5."""
  value = config.get(key, default)
  if value is None:
    raise ConversionError(f"{where}: missing '{key}'")
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if not isinstance(value, int) or isinstance(value, bool):
    raise ConversionError(f"{where}: '{key}' should be an integer, found {value!r}")
  return value


def _int_list(config: dict, key: str, where: str) -> tuple[int, ...]:
  values = config.get(key)
  if not isinstance(values, list):
    raise ConversionError(f"{where}: '{key}' should be a list of integers, found {values!r}")
  return tuple(_int({key: v}, key, where) for v in values)


def _number_features_dim(state_dict: dict, key: str, where: str) -> int:
  if key not in state_dict:
    raise ConversionError(f"{where}: missing tensor {key}")
  return 2 * int(state_dict[key].shape[0])


def _tokenizer_max_length(tokenizer_dir: Path) -> int | None:
  path = tokenizer_dir / "tokenizer_config.json"
  if not path.is_file():
    return None
  value = _read_json(path).get("model_max_length")
  if isinstance(value, (int, float)) and 0 < value < _UNSET_MAX_LENGTH:
    return int(value)
  return None


def t5_config_from_hf(config: dict, where: str, max_length: int) -> T5Config:
  if config.get("model_type", "t5") != "t5":
    raise ConversionError(f"{where}: expected a T5 model config, found model_type {config.get('model_type')!r}")
  return T5Config(
      vocab_size=_int(config, "vocab_size", where), d_model=_int(config, "d_model", where),
      d_kv=_int(config, "d_kv", where), d_ff=_int(config, "d_ff", where),
      num_layers=_int(config, "num_layers", where), num_heads=_int(config, "num_heads", where),
      relative_attention_num_buckets=_int(config, "relative_attention_num_buckets", where, 32),
      relative_attention_max_distance=_int(config, "relative_attention_max_distance", where, 128),
      layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-6)),
      feed_forward_proj=str(config.get("feed_forward_proj", "relu")), max_length=max_length)


def _model_config(**parts) -> ModelConfig:
  try:
    return ModelConfig(**parts)
  except ConfigError as e:
    raise ConversionError(str(e)) from None


# ----------------------------------------------------------------------------- diffusers


def read_diffusers(root: Path) -> SourceCheckpoint:
  """A diffusers folder: Stable Audio Open's StableAudioPipeline, or Stable Audio 3's pipelines
  (convert/sa3_sources.py)."""
  index_path = root / "model_index.json"
  if index_path.is_file() and is_sa3_index(_read_json(index_path)):
    return read_sa3_diffusers(root)
  missing = [p for p in DIFFUSERS_PARTS if not (root / p).is_dir()]
  if missing:
    raise ConversionError(f"{root}: diffusers layout is missing the folder(s) {', '.join(missing)}/ "
                          f"(a StableAudioPipeline checkpoint has {', '.join(p + '/' for p in DIFFUSERS_PARTS)})")
  index = _read_json(root / "model_index.json")
  if index.get("_class_name") not in (None, "StableAudioPipeline"):
    raise ConversionError(f"{root}: model_index.json describes a {index.get('_class_name')}, "
                          "not a StableAudioPipeline or a Stable Audio 3 pipeline")

  def weights(part: str, stems: tuple[str, ...]):
    tensors, files = read_sharded(root / part, stems)
    return tensors, ", ".join(str(f) for f in files)

  dit_sd, dit_origin = weights("transformer", ("diffusion_pytorch_model",))
  vae_sd, vae_origin = weights("vae", ("diffusion_pytorch_model",))
  t5_sd, t5_origin = weights("text_encoder", ("model", "pytorch_model"))
  proj_sd, proj_origin = weights("projection_model", ("diffusion_pytorch_model",))

  where = str(root / "transformer" / "config.json")
  tc = _read_json(root / "transformer" / "config.json")
  heads, head_dim = _int(tc, "num_attention_heads", where), _int(tc, "attention_head_dim", where)
  if _int(tc, "out_channels", where) != _int(tc, "in_channels", where):
    raise ConversionError(f"{where}: in_channels and out_channels differ; Stable Audio uses the same latent width")
  dit = DiTConfig(
      io_channels=_int(tc, "in_channels", where), embed_dim=heads * head_dim, depth=_int(tc, "num_layers", where),
      num_heads=heads, cross_kv_heads=_int(tc, "num_key_value_attention_heads", where),
      cond_token_dim=_int(tc, "cross_attention_dim", where), cond_input_dim=_int(tc, "cross_attention_input_dim", where),
      global_cond_dim=_int(tc, "global_states_input_dim", where), time_features_dim=_int(tc, "time_proj_dim", where),
      rotary_dim=head_dim // 2, sample_size=_int(tc, "sample_size", where))

  where = str(root / "vae" / "config.json")
  vc = _read_json(root / "vae" / "config.json")
  latent = _int(vc, "decoder_input_channels", where)
  if _int(vc, "encoder_hidden_size", where) != 2 * latent:
    raise ConversionError(f"{where}: diffusers' Oobleck encoder emits encoder_hidden_size="
                          f"{vc['encoder_hidden_size']} channels, which must be 2 x decoder_input_channels ({latent})")
  vae = OobleckConfig(
      audio_channels=_int(vc, "audio_channels", where), encoder_channels=_int(vc, "encoder_hidden_size", where),
      decoder_channels=_int(vc, "decoder_channels", where), latent_dim=latent,
      strides=_int_list(vc, "downsampling_ratios", where), channel_mults=_int_list(vc, "channel_multiples", where),
      sample_rate=_int(vc, "sampling_rate", where))

  tokenizer_dir = root / "tokenizer"
  t5 = t5_config_from_hf(_read_json(root / "text_encoder" / "config.json"),
                         str(root / "text_encoder" / "config.json"), _tokenizer_max_length(tokenizer_dir) or 128)

  where = str(root / "projection_model" / "config.json")
  pc = _read_json(root / "projection_model" / "config.json")
  conditioner = ConditionerConfig(
      text_dim=_int(pc, "text_encoder_dim", where), cond_dim=_int(pc, "conditioning_dim", where),
      seconds_min=float(pc.get("min_value", 0)), seconds_max=float(pc.get("max_value", 512)),
      number_features_dim=_number_features_dim(
          proj_sd, "start_number_conditioner.time_positional_embedding.0.weights", proj_origin))

  scheduler_path = root / "scheduler" / "scheduler_config.json"
  return SourceCheckpoint(
      layout=DIFFUSERS, config=_model_config(dit=dit, vae=vae, t5=t5, conditioner=conditioner, name=root.name),
      state_dicts={"dit": dit_sd, "vae": vae_sd, "t5": t5_sd, "conditioner": proj_sd},
      origins={"dit": dit_origin, "vae": vae_origin, "t5": t5_origin, "conditioner": proj_origin},
      tokenizer_dir=tokenizer_dir, ignore={"t5": t5_ignored},
      scheduler=_read_json(scheduler_path) if scheduler_path.is_file() else None)


# ----------------------------------------------------------------------------- stable-audio-tools


def _find_t5(t5_dir: Path | None) -> tuple[Path, Path]:
  """(T5 weights+config folder, tokenizer folder) from a T5 model dir or a diffusers checkpoint."""
  if t5_dir is None:
    raise ConversionError("a stable-audio-tools checkpoint does not contain T5; pass {field} with a t5-base folder "
                          "in Hugging Face layout (config.json, model.safetensors, tokenizer files) or a diffusers "
                          "Stable Audio checkpoint (its text_encoder/ and tokenizer/ are used)", field="t5_dir")
  return text_encoder_folders(t5_dir, "a T5 model folder", "a diffusers checkpoint")


def _conditioning_by_id(mc: dict, where: str) -> dict[str, dict]:
  try:
    configs = mc["model"]["conditioning"]["configs"]
    return {c["id"]: c for c in configs}
  except (KeyError, TypeError):
    raise ConversionError(f"{where}: expected model.conditioning.configs (a list of conditioners)") from None


# DiT options of stable-audio-tools that we read; any other key must keep stable-audio-tools' default
_DIT_READ = {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim",
             "project_cond_tokens", "project_global_cond", "transformer_type", "attn_kwargs", "timestep_features_dim"}
_DIT_DEFAULTS = {"patch_size": 1, "global_cond_type": "prepend", "input_concat_dim": 0, "prepend_cond_dim": 0,
                 "timestep_cond_type": "global", "timestep_features_type": "learned", "timestep_features_logsnr": False,
                 "timestep_embed_dim": None, "use_sinusoidal_emb": False, "use_abs_pos_emb": False,
                 "num_memory_tokens": 0, "rotary_pos_emb": True, "cross_attn_rotary_pos_emb": False, "causal": False,
                 "conformer": False, "layer_scale": False, "norm_type": "layer_norm", "use_checkpointing": False,
                 "zero_init_branch_outputs": True}
_ATTN_READ = {"qk_norm", "qk_norm_eps"}
# stable-audio-tools' classes' own defaults for each kind of sampling shift (inference/sampling.py)
_SHIFT_DEFAULTS = {"logsnr": {"rate": 1.0}, "flux": {}, "full": {}, "none": {}}
_SHIFT_KEYS = {"logsnr": ("rate", "anchor_length", "anchor_logsnr", "logsnr_end"),
               "flux": ("min_length", "max_length", "alpha_min", "alpha_max"),
               "full": ("base_shift", "max_shift", "min_length", "max_length", "use_sine"), "none": ()}


def _dit_options(dc: dict, where: str) -> None:
  """Every DiT option of the config is one we implement, or at stable-audio-tools' default."""
  for key, value in dc.items():
    if key in _DIT_READ:
      continue
    if key not in _DIT_DEFAULTS:
      raise ConversionError(f"{where}: diffusion.config option {key!r} is not supported by this converter")
    if value != _DIT_DEFAULTS[key]:
      raise ConversionError(f"{where}: diffusion.config {key} = {value!r} is not supported (only "
                            f"{_DIT_DEFAULTS[key]!r})")
  attn = dc.get("attn_kwargs") or {}
  if not isinstance(attn, dict) or set(attn) - _ATTN_READ:
    raise ConversionError(f"{where}: attn_kwargs {attn!r}: only qk_norm and qk_norm_eps are supported")
  if attn.get("qk_norm", "none") not in QK_NORMS:
    raise ConversionError(f"{where}: qk_norm {attn.get('qk_norm')!r} is not supported (one of {QK_NORMS})")


def _shift(diffusion: dict, where: str) -> DistributionShift:
  """The sampling shift: stable-audio-tools' model default (LogSNR at rate 0) when the config has
  none; else the kind it names (`full` when it names none, as stable-audio-tools reads it)."""
  options = diffusion.get("sampling_distribution_shift_options")
  if options is None:
    return DistributionShift()
  if not isinstance(options, dict):
    raise ConversionError(f"{where}: sampling_distribution_shift_options must be an object, got {options!r}")
  options = dict(options)
  kind = options.pop("type", "full")
  if kind not in _SHIFT_KEYS:
    raise ConversionError(f"{where}: sampling shift type {kind!r} is not supported (one of {tuple(_SHIFT_KEYS)})")
  unknown = sorted(set(options) - set(_SHIFT_KEYS[kind]))
  if unknown:
    raise ConversionError(f"{where}: sampling shift {kind!r} has no option(s) {unknown}")
  return DistributionShift(kind=kind, **(_SHIFT_DEFAULTS[kind] | options))


def sat_config(mc: dict, where: str, t5: T5Config) -> ModelConfig:
  """Our ModelConfig from a stable-audio-tools model_config.json (diffusion_cond, DiT, Oobleck):
  Stable Audio Open 1.0, Stable Audio Open Small (model_config.json or base_model_config.json) and
  their fine-tunes. Every option is read from the file; one we do not implement is refused by name."""
  try:
    model = mc["model"]
    pre = model["pretransform"]["config"]
    enc, dec = pre["encoder"]["config"], pre["decoder"]["config"]
    diffusion = model["diffusion"]
    dc = diffusion["config"]
    cond_dim = model["conditioning"]["cond_dim"]
  except (KeyError, TypeError) as e:
    raise ConversionError(f"{where}: not a stable-audio-tools diffusion_cond config (missing {e})") from None
  if diffusion.get("type") != "dit":
    raise ConversionError(f"{where}: diffusion type {diffusion.get('type')!r} is not supported (only 'dit')")
  if dc.get("transformer_type", "continuous_transformer") != "continuous_transformer":
    raise ConversionError(f"{where}: transformer_type {dc.get('transformer_type')!r} is not supported")
  _dit_options(dc, where)
  objective = diffusion.get("diffusion_objective", "v")
  if objective not in OBJECTIVES:
    raise ConversionError(f"{where}: diffusion_objective {objective!r} is not supported (one of {OBJECTIVES})")

  conds = _conditioning_by_id(mc, where)
  cross_ids = list(diffusion.get("cross_attention_cond_ids", []))
  global_ids = list(diffusion.get("global_cond_ids", []))
  if not cross_ids or cross_ids[0] != "prompt":
    raise ConversionError(f"{where}: cross_attention_cond_ids {cross_ids} must start with the text 'prompt'")
  numbers = tuple(cross_ids[1:])
  for key in numbers:
    if key not in NUMBERS or conds.get(key, {}).get("type") != "number":
      raise ConversionError(f"{where}: cross-attention conditioner {key!r} is not a number conditioner this family "
                            f"has ({', '.join(NUMBERS)})")
  if not global_ids or any(key not in numbers for key in global_ids):
    raise ConversionError(f"{where}: global_cond_ids {global_ids} must be number conditioners of "
                          f"cross_attention_cond_ids ({list(numbers)})")
  for key in ("input_concat_ids", "prepend_cond_ids", "local_add_cond_ids"):
    if diffusion.get(key):
      raise ConversionError(f"{where}: {key} {diffusion[key]} is not supported")
  ranges = {(conds[key]["config"].get("min_val", 0), conds[key]["config"].get("max_val", 512)) for key in numbers}
  if len(ranges) != 1:
    raise ConversionError(f"{where}: the number conditioners {list(numbers)} have different ranges; not supported")
  low, high = ranges.pop()

  embed, heads = _int(dc, "embed_dim", where), _int(dc, "num_heads", where)
  head_dim = embed // heads
  token_dim = _int(dc, "cond_token_dim", where)
  global_dim = _int(dc, "global_cond_dim", where)
  projected = embed if dc.get("project_cond_tokens", True) else token_dim  # stable-audio-tools' default: project
  if not dc.get("project_global_cond", True) and global_dim != embed:
    raise ConversionError(f"{where}: project_global_cond false needs global_cond_dim ({global_dim}) = embed_dim "
                          f"({embed})")
  attn = dc.get("attn_kwargs") or {}
  downsampling = _int(pre, "downsampling_ratio", where)
  latent = _int(dec, "latent_dim", where)
  if _int(enc, "latent_dim", where) != 2 * latent:
    raise ConversionError(f"{where}: encoder latent_dim must be 2 x decoder latent_dim (a VAE bottleneck)")
  if pre.get("bottleneck", {}).get("type", "vae") != "vae":
    raise ConversionError(f"{where}: only the 'vae' bottleneck is supported")
  if dec.get("final_tanh", False):
    raise ConversionError(f"{where}: decoder final_tanh is not supported")

  dit = DiTConfig(
      io_channels=_int(dc, "io_channels", where), embed_dim=embed, depth=_int(dc, "depth", where), num_heads=heads,
      cross_kv_heads=projected // head_dim, cond_token_dim=projected, cond_input_dim=token_dim,
      global_cond_dim=global_dim, time_features_dim=_int(dc, "timestep_features_dim", where, 256),
      rotary_dim=max(head_dim // 2, 32), sample_size=_int(mc, "sample_size", where) // downsampling,
      qk_norm=attn.get("qk_norm", "none"), qk_norm_eps=float(attn.get("qk_norm_eps", 1e-6)))
  vae = OobleckConfig(
      audio_channels=_int(pre, "io_channels", where), encoder_channels=_int(enc, "channels", where),
      decoder_channels=_int(dec, "channels", where), latent_dim=latent, strides=_int_list(enc, "strides", where),
      channel_mults=_int_list(enc, "c_mults", where), sample_rate=_int(mc, "sample_rate", where))
  if _int_list(dec, "strides", where) != vae.strides or _int_list(dec, "c_mults", where) != vae.channel_mults:
    raise ConversionError(f"{where}: encoder and decoder strides / c_mults differ; not supported")
  conditioner = ConditionerConfig(text_dim=t5.d_model, cond_dim=int(cond_dim), seconds_min=float(low),
                                  seconds_max=float(high), numbers=numbers, global_numbers=tuple(global_ids))
  return _model_config(dit=dit, vae=vae, t5=t5, conditioner=conditioner,
                       diffusion=DiffusionConfig(objective=objective, shift=_shift(diffusion, where)),
                       name=f"stable-audio-tools {objective}, depth {dit.depth}")


def _sat_max_length(mc: dict, where: str) -> int:
  prompt = _conditioning_by_id(mc, where).get("prompt")
  if not prompt or prompt.get("type") != "t5":
    raise ConversionError(f"{where}: expected a T5 conditioner with id 'prompt'")
  return _int(prompt.get("config", {}), "max_length", where, 128)


TRAINING_PREFIX, EMA_PREFIX = "diffusion.", "diffusion_ema.ema_model."


def unwrap_training_snapshot(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A stable-audio-tools Lightning training snapshot -> the single-file layout. The snapshot holds
  the online model under `diffusion.model.*` and its exponential moving average under
  `diffusion_ema.ema_model.*`: the EMA weights are the ones to use (what stable-audio-tools'
  unwrap_model exports); the conditioner and the VAE come from `diffusion.*`. A snapshot without
  an EMA gives its online weights. A single file passes through unchanged."""
  if not any(k.startswith(TRAINING_PREFIX) for k in state):
    return state
  ema = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
  out = {k[len(TRAINING_PREFIX):]: v for k, v in state.items()
         if k.startswith(TRAINING_PREFIX) and not (ema and k.startswith(TRAINING_PREFIX + "model."))}
  out.update({f"model.{k}": v for k, v in ema.items()})
  return out


def _config_beside(weights_file: Path) -> Path:
  """model_config.json beside the weights; base_model_config.json beside base_model.ckpt (SAO Small's pre-ARC model)."""
  paired = weights_file.parent / f"{weights_file.stem}_config.json"
  return paired if paired.is_file() else weights_file.parent / "model_config.json"


def read_sat(weights_file: Path, model_config: Path | None, t5_dir: Path | None) -> SourceCheckpoint:
  config_path = model_config or _config_beside(weights_file)
  if not config_path.is_file():
    raise ConversionError(f"{weights_file}: no model_config.json beside it; pass {{field}}", field="model_config")
  mc = _read_json(config_path)
  if is_sa3_single_file(mc):  # Stable Audio 3 (a T5Gemma prompt, a SAME autoencoder), not Stable Audio Open
    return read_sa3_single_file(weights_file, config_path, t5_dir)
  t5_root, tokenizer_dir = _find_t5(t5_dir)
  t5_hf = _read_json(t5_root / "config.json")
  t5 = t5_config_from_hf(t5_hf, str(t5_root / "config.json"), _sat_max_length(mc, str(config_path)))
  state = unwrap_training_snapshot(read_weights(weights_file))

  def take(prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

  dit_sd = take("model.model.")
  vae_sd = take("pretransform.model.")
  cond_sd = take("conditioner.conditioners.")
  if not dit_sd:
    raise ConversionError(f"{weights_file}: no 'model.model.*' tensors; this is not a stable-audio-tools diffusion "
                          "checkpoint (for a diffusers folder, pass the folder itself as {source})",
                          mentions=("source",))
  leftovers = sorted(k for k in state if not k.startswith(("model.model.", "pretransform.model.",
                                                           "conditioner.conditioners.")))
  config = sat_config(mc, str(config_path), t5)
  config = config.replace(conditioner=dataclasses.replace(
      config.conditioner, number_features_dim=_number_features_dim(
          cond_sd, f"{config.conditioner.numbers[0]}.embedder.embedding.0.weights", str(weights_file))))
  t5_sd, t5_files = read_sharded(t5_root, ("model", "pytorch_model"))
  if leftovers:
    # Report them with the DiT, whose prefix is the usual home of stray tensors.
    dit_sd.update({f"<outside model/pretransform/conditioner> {k}": state[k] for k in leftovers})
  return SourceCheckpoint(
      layout=SAT, config=config, state_dicts={"dit": dit_sd, "vae": vae_sd, "t5": t5_sd, "conditioner": cond_sd},
      origins={"dit": f"{weights_file} [model.model.*]", "vae": f"{weights_file} [pretransform.model.*]",
               "t5": ", ".join(str(f) for f in t5_files), "conditioner": f"{weights_file} [conditioner.conditioners.*]"},
      tokenizer_dir=tokenizer_dir, ignore={"t5": t5_ignored})


# ----------------------------------------------------------------------------- hub and detection

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def download_from_hub(repo_id: str, token: str | None, cache_dir: Path | None = None) -> Path:
  """Downloads the diffusers files of a hub repo (e.g. stabilityai/stable-audio-open-1.0)."""
  patterns = ["model_index.json", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json",
              "tokenizer/*", "scheduler/*"]
  try:
    path = snapshot_download(repo_id, token=token, allow_patterns=patterns,
                             cache_dir=str(cache_dir) if cache_dir else None)
  except Exception as e:  # network, auth and gating errors all end here; say which
    raise ConversionError(f"cannot download {repo_id} from the Hugging Face hub: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''} (gated repos need {{hf_token}})",
                          mentions=("hf_token",)) from None
  return Path(path)


def is_hub_id(source: str) -> bool:
  """owner/name that is not a local path: nothing by that name exists here and its first part
  is not an existing folder (`ckpt/sao-typo` beside a `ckpt/` folder is a typo, not a hub id)."""
  if not HUB_ID.match(source) or source.startswith((".", "~")):
    return False
  return not Path(source).exists() and not Path(source.split("/")[0]).is_dir()


def read_source(source: str | Path, *, t5_dir: Path | None = None, model_config: Path | None = None,
                hf_token: str | None = None) -> SourceCheckpoint:
  """Reads any supported layout; an unknown one is an error that says what was looked for."""
  if isinstance(source, str) and is_hub_id(source):
    try:
      downloaded = download_from_hub(source, hf_token)
    except ConversionError as e:  # the name could be either: say first that no such local path exists
      raise ConversionError(f"{{field}} {source}: no such local file or directory, and as a Hugging Face hub id it "
                            f"could not be used: {e.template}", field="source", mentions=e.mentions) from None
    return read_diffusers(downloaded)
  path = Path(source).expanduser()
  if not path.exists():
    raise ConversionError(f"{{field}} {path}: no such file or directory", field="source")
  if path.is_file():
    if path.suffix in (".safetensors", ".ckpt"):
      return read_sat(path, model_config, t5_dir)
    raise ConversionError(f"{path}: expected a stable-audio-tools model.safetensors or model.ckpt file")
  if (path / "model_index.json").is_file():
    return read_diffusers(path)
  for name in SAT_WEIGHT_FILES:
    if (path / name).is_file():
      return read_sat(path / name, model_config, t5_dir)
  raise ConversionError(
      f"{path}: unknown checkpoint layout; looked for model_index.json (diffusers), "
      f"{' or '.join(SAT_WEIGHT_FILES)} with model_config.json (stable-audio-tools)")
