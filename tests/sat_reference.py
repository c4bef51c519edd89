"""stable-audio-tools 0.0.20 as a test-only PyTorch reference for Stable Audio Open Small and the
rectified-flow family (torch and stable_audio_tools are imported here and only here).

What it gives a parity test (numpy in, numpy out, SAT's own code doing the work):
  configs      `tiny_config(objective)`: a SAO-Small-shaped `model_config.json` dict in SAT's own format
               (DiT `continuous_transformer` + qk_norm "ln" + prepended global token, T5 + seconds_total,
               Oobleck VAE), small enough for CPU; objective `rf_denoiser` (like model.safetensors) or
               `rectified_flow` (like base_model.ckpt).
  builders     `build_tiny(root, objective)`: tiny T5 folder + tokenizer, SAT model with every parameter
               random (seeded), saved as `model.safetensors` + `model_config.json`.
               `save_safetensors`, `save_unwrapped_ckpt` (the `{"state_dict": ...}` export format of
               `unwrap_model.py` / `export_model`), `save_lightning_ckpt` (a training snapshot as
               `DiffusionCondTrainingWrapper` holds it: online weights under `diffusion.*`, EMA weights
               under `diffusion_ema.ema_model.*`), `load_model` (SAT's own gradio-side loader, which
               unwraps training snapshots and prefers the EMA copy).
  functions    `conditioning`, `dit_forward`, `rf_schedule`, `sample`, `vae_encode_mean`, `vae_encode`,
               `vae_decode`, `generate`, `invert`.

Fixed noise: SAT draws its randomness inside its own functions (`torch.randn` for the initial noise in
`generate_diffusion_cond`, `torch.randn_like` once per step in the ping-pong sampler, `torch.randn_like`
in the VAE bottleneck). `fixed_noise(...)` replaces the `torch` name in exactly those SAT modules
(inference.generation, inference.sampling, models.bottleneck) by a proxy whose `randn` / `randn_like`
return the given arrays in order (shape-checked; every other attribute is torch's own), and restores
it on exit. Asking for more draws than given, or leaving some unused, raises: the test states exactly
which random numbers SAT consumed. Nothing else in torch is touched.

T5: SAT runs its T5 in float16 (`T5Conditioner.__init__` casts the model); every function that
encodes text takes `t5_dtype` ("float16" = SAT as shipped, "float32" = the float32 T5 that diffusers
and our JAX port run) and restores the model's dtype afterwards.

The tiny T5 has d_model 768 because SAT reads the text width from its table `T5_MODEL_DIMS["t5-base"]`
(and inserts a projection when `cond_dim` differs); its other sizes are tiny (docs/architecture.md, Testing).
The conditioner is pointed at the local folder through the config key `model_path`, which
`load_model` adds to the config in memory; the `model_config.json` on disk stays like the real one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import stable_audio_tools  # noqa: E402  (fails here, loudly, if the reference is not installed)
from stable_audio_tools.inference import generation as _sat_generation  # noqa: E402
from stable_audio_tools.inference import sampling as _sat_sampling  # noqa: E402
from stable_audio_tools.inference.inversion import invert_audio  # noqa: E402
from stable_audio_tools.models import bottleneck as _sat_bottleneck  # noqa: E402
from stable_audio_tools.models.diffusion import ConditionedDiffusionModelWrapper  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402
from stable_audio_tools.models.utils import load_ckpt_state_dict  # noqa: E402

SAT_VERSION = "0.0.20"
OBJECTIVES = ("rf_denoiser", "rectified_flow")

# The tiny T5 of docs/architecture.md (Testing), at the width SAT's T5_MODEL_DIMS gives "t5-base" (768), so the
# conditioner's proj_out is an Identity exactly as in SAO Small (cond_dim 768).
T5_TINY_SAT = dict(vocab_size=128, d_model=768, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                   feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
TEXT_MAX_LENGTH = 12
LATENT_FRAMES = 16  # tiny sample_size = LATENT_FRAMES * downsampling ratio 4


def tiny_config(objective: str = "rf_denoiser", *, t5_max_length: int = TEXT_MAX_LENGTH,
                sampling_distribution_shift_options: dict | None = None, latent_frames: int = LATENT_FRAMES,
                seconds_max: float = 256) -> dict:
  """SAO Small's `model_config.json` layout (docs/sao_small_spec.md section 8) at tiny sizes.

  DiT: width 128, 2 heads of 64 (rotary on 32 dims like SAO 1.0; SAO Small has 8 heads of 128 and
  rotary on 64), depth 2, io 4, qk_norm "ln", project_cond_tokens/project_global_cond left at their
  default (true). VAE: Oobleck with 2 blocks (strides 2, 2). Conditioning: T5 (t5-base width, tiny
  elsewhere) + seconds_total (0..256)."""
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  latent, hop = 4, 4
  diffusion = {
      "cross_attention_cond_ids": ["prompt", "seconds_total"],
      "global_cond_ids": ["seconds_total"],
      "type": "dit",
      "diffusion_objective": objective,
      "config": {
          "io_channels": latent, "embed_dim": 128, "depth": 2, "num_heads": 2,
          "cond_token_dim": 768, "global_cond_dim": 768, "transformer_type": "continuous_transformer",
          "attn_kwargs": {"qk_norm": "ln"},
      },
  }
  if sampling_distribution_shift_options is not None:
    diffusion["sampling_distribution_shift_options"] = dict(sampling_distribution_shift_options)
  return {
      "model_type": "diffusion_cond",
      "sample_size": latent_frames * hop,
      "sample_rate": 44100,
      "audio_channels": 2,
      "model": {
          "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
              "encoder": {"type": "oobleck", "requires_grad": False, "config": {
                  "in_channels": 2, "channels": 8, "c_mults": [1, 2], "strides": [2, 2],
                  "latent_dim": 2 * latent, "use_snake": True}},
              "decoder": {"type": "oobleck", "config": {
                  "out_channels": 2, "channels": 8, "c_mults": [1, 2], "strides": [2, 2],
                  "latent_dim": latent, "use_snake": True, "final_tanh": False}},
              "bottleneck": {"type": "vae"}, "latent_dim": latent, "downsampling_ratio": hop, "io_channels": 2}},
          "conditioning": {"configs": [
              {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": t5_max_length}},
              {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": seconds_max}}],
              "cond_dim": 768},
          "diffusion": diffusion,
          "io_channels": latent,
      },
  }


# ----------------------------------------------------------------------------- random weights


def randomize_sat_(module: torch.nn.Module, seed: int, *, zero_layernorm_beta_buffers: bool = False):
  """Every parameter and float buffer random and non-trivial (norm gains near 1, biases non-zero,
  weight-norm g positive, Snake alpha/beta log-scale), so that no part of the model is tested only at
  SAT's zero or identity initialisation (SAT zero-initialises to_out, the feed-forward's last linear,
  pre/postprocess_conv, and every norm is 1/0 at start).

  Left at SAT's own seeded initialisation: `rotary_pos_emb.inv_freq` (derived frequencies: changing
  it changes the math), `timestep_features.weight` (std-16 Fourier buffer) and the number
  conditioners' `embedding.0.weights` (std-16 Fourier weights): already random and realistic.
  The block LayerNorms' `beta` is a zero buffer in real checkpoints (SAT's LayerNorm has bias=False);
  it is made random too unless zero_layernorm_beta_buffers (then exactly the real layout)."""
  gen = torch.Generator().manual_seed(seed)
  snake_prefixes = {name for name, m in module.named_modules() if type(m).__name__ == "SnakeBeta"}
  with torch.no_grad():
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
      if not tensor.is_floating_point():
        continue
      mod, _, leaf = name.rpartition(".")
      if leaf == "inv_freq" or name.endswith("timestep_features.weight") or name.endswith("embedding.0.weights"):
        continue
      noise = torch.randn(tensor.shape, generator=gen)
      if mod in snake_prefixes:
        tensor.copy_(0.3 * noise)
      elif leaf == "weight_g":
        tensor.copy_(0.2 + 0.3 * noise.abs())
      elif leaf == "gamma" or (leaf == "weight" and "norm" in mod.rsplit(".", 1)[-1]):
        tensor.copy_(1.0 + 0.1 * noise)
      elif leaf == "beta" and zero_layernorm_beta_buffers:
        tensor.zero_()
      elif tensor.ndim >= 2:
        tensor.copy_(noise * int(np.prod(tensor.shape[1:])) ** -0.5)
      else:
        tensor.copy_(0.1 * noise)
  return module.eval()


def build_tiny_t5(directory: Path, seed: int = 3, *, max_length: int = TEXT_MAX_LENGTH) -> Path:
  """A tiny T5 encoder (random, float32) + the repo's offline tokenizer, in one Hugging Face folder
  (what T5Conditioner's `model_path` loads with AutoTokenizer / T5EncoderModel.from_pretrained)."""
  from transformers import T5Config, T5EncoderModel

  from musickv_jax.convert.export import build_tiny_tokenizer

  torch.manual_seed(seed)
  t5 = randomize_sat_(T5EncoderModel(T5Config(**T5_TINY_SAT)), seed + 1)
  with torch.no_grad():  # float16-exact weights: SAT's cast to float16 loses nothing of them, so its T5 run
    for parameter in t5.parameters():  # in float32 is the float32 T5 that transformers, diffusers and we run
      parameter.copy_(parameter.half().float())
  directory = Path(directory)
  t5.save_pretrained(directory)
  build_tiny_tokenizer(max_length).save_pretrained(str(directory))
  return directory


# ----------------------------------------------------------------------------- model, files, loading


@dataclasses.dataclass
class SATModel:
  model: ConditionedDiffusionModelWrapper  # SAT's own wrapper (model.model = DiTWrapper)
  config: dict  # as written to model_config.json (no model_path)
  t5_dir: Path

  @property
  def objective(self) -> str:
    return self.model.diffusion_objective

  @property
  def downsampling_ratio(self) -> int:
    return int(self.model.pretransform.downsampling_ratio)


def _with_t5_path(config: dict, t5_dir: Path) -> dict:
  config = copy.deepcopy(config)
  for item in config["model"]["conditioning"]["configs"]:
    if item["type"] == "t5":
      item["config"]["model_path"] = str(t5_dir)
  return config


def create_model(config: dict, t5_dir: Path) -> ConditionedDiffusionModelWrapper:
  """SAT's factory on `config`, with the T5 conditioner pointed at the local folder."""
  return create_model_from_config(_with_t5_path(config, t5_dir)).eval().requires_grad_(False)


def build_tiny(root: Path, objective: str = "rf_denoiser", *, seed: int = 0, config: dict | None = None,
               zero_layernorm_beta_buffers: bool = False, save: bool = True) -> SATModel:
  """Tiny T5 folder (root/t5), a random SAT model and, if save, root/model.safetensors +
  root/model_config.json (the released single-file layout)."""
  root = Path(root)
  config = config or tiny_config(objective)
  t5_dir = root / "t5"
  if not (t5_dir / "config.json").is_file():
    build_tiny_t5(t5_dir, seed + 3,
                  max_length=config["model"]["conditioning"]["configs"][0]["config"]["max_length"])
  torch.manual_seed(seed)
  model = randomize_sat_(create_model(config, t5_dir), seed + 1,
                         zero_layernorm_beta_buffers=zero_layernorm_beta_buffers)
  ref = SATModel(model, config, t5_dir)
  if save:
    save_safetensors(ref, root)
  return ref


def state_dict(ref: SATModel) -> dict[str, torch.Tensor]:
  """The single-file state dict: model.model.*, conditioner.conditioners.*, pretransform.model.*
  (T5 is not in it: SAT keeps the T5 module out of the state dict)."""
  return {k: v.detach().clone().contiguous() for k, v in ref.model.state_dict().items()}


def save_safetensors(ref: SATModel, directory: Path, name: str = "model") -> tuple[Path, Path]:
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  weights, config = directory / f"{name}.safetensors", directory / f"{name}_config.json"
  save_file(state_dict(ref), str(weights))
  config.write_text(json.dumps(ref.config, indent=2))
  return weights, config


def save_unwrapped_ckpt(ref: SATModel, directory: Path, name: str = "base_model") -> tuple[Path, Path]:
  """`{"state_dict": ...}` with the single-file keys: what SAT's `export_model` writes
  (training/diffusion.py:917-924) and what `load_ckpt_state_dict` reads from a `.ckpt`."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  weights, config = directory / f"{name}.ckpt", directory / f"{name}_config.json"
  torch.save({"state_dict": state_dict(ref)}, weights)
  config.write_text(json.dumps(ref.config, indent=2))
  return weights, config


def _sat_ema_class():
  """SAT's vendored EMA (training/ema.py), loaded from its file: importing the package
  `stable_audio_tools.training` would import the training wrappers' extra dependencies (auraloss ...)."""
  path = Path(stable_audio_tools.__file__).parent / "training" / "ema.py"
  spec = importlib.util.spec_from_file_location("_sat_training_ema", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.EMA


class _TrainingSnapshot(torch.nn.Module):
  """The module tree of DiffusionCondTrainingWrapper (training/diffusion.py:269-377) that its
  state_dict sees: `diffusion` (the ConditionedDiffusionModelWrapper) and `diffusion_ema`, SAT's EMA
  built exactly as the wrapper builds it (include_online_model=False, so only `ema_model.*`,
  `initted`, `step`). The wrapper holds no other module or buffer (its Sobol engine is not one)."""

  def __init__(self, diffusion, ema_model=None):
    super().__init__()
    self.diffusion = diffusion
    self.diffusion_ema = _sat_ema_class()(diffusion.model, ema_model=ema_model, beta=0.999, power=3 / 4,
                                          update_every=1, update_after_step=1, include_online_model=False)


def save_lightning_ckpt(ref: SATModel, directory: Path, name: str = "epoch=0-step=1000", *,
                        online_seed: int = 12345, global_step: int = 1000) -> tuple[Path, Path]:
  """A Lightning training snapshot of DiffusionCondTrainingWrapper: the EMA copy holds `ref`'s DiT
  weights (`diffusion_ema.ema_model.*`), the online model (`diffusion.model.*`) different random
  weights, conditioner and pretransform under `diffusion.*`. SAT's loaders use the EMA copy; a loader
  that takes `diffusion.model.*` gets the wrong (online) weights. Top-level keys as Lightning's
  checkpoint connector writes them; everything loads with torch.load(weights_only=True)."""
  import pytorch_lightning

  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  online = create_model(ref.config, ref.t5_dir)  # (a deepcopy of the wrapper fails on weight-normed convs)
  online.load_state_dict(ref.model.state_dict())
  randomize_sat_(online.model, online_seed)
  snapshot = _TrainingSnapshot(online, ema_model=copy.deepcopy(ref.model.model))
  snapshot.diffusion_ema.initted.fill_(1.0)
  snapshot.diffusion_ema.step.fill_(global_step)
  state = {k: v.detach().clone().contiguous() for k, v in snapshot.state_dict().items()}
  checkpoint = {
      "epoch": 0, "global_step": global_step, "pytorch-lightning_version": pytorch_lightning.__version__,
      "state_dict": state, "loops": {}, "callbacks": {},
      "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                          "weight_decay": 1e-3, "params": []}]}],
      "lr_schedulers": [],
  }
  weights, config = directory / f"{name}.ckpt", directory / "model_config.json"
  torch.save(checkpoint, weights)
  config.write_text(json.dumps(ref.config, indent=2))
  return weights, config


def _sat_gradio_module():
  """stable_audio_tools.interface.gradio (home of `load_model` and `unwrap_state_dict`, the code
  run_gradio.py uses for --ckpt-path). Its module level imports gradio but uses none of it; when
  gradio is not installed, an empty stand-in is placed in sys.modules for the import only."""
  name = "stable_audio_tools.interface.gradio"
  if name in sys.modules:
    return sys.modules[name]
  stub = None
  if importlib.util.find_spec("gradio") is None:
    stub = sys.modules["gradio"] = types.ModuleType("gradio")
  try:
    import stable_audio_tools.interface.gradio as module
  finally:
    if stub is not None and sys.modules.get("gradio") is stub:
      del sys.modules["gradio"]
  return module


def load_model(config_path: Path, weights_path: Path, t5_dir: Path, *, strict: bool = True) -> SATModel:
  """SAT's own loading path: gradio.load_model (create_model_from_config, load_ckpt_state_dict,
  unwrap_state_dict (EMA preferred), copy_state_dict). copy_state_dict silently skips unknown or
  mis-shaped keys, so strict also checks that the file's (unwrapped) keys are exactly the model's."""
  gradio = _sat_gradio_module()
  config = json.loads(Path(config_path).read_text())
  model, _ = gradio.load_model(model_config=_with_t5_path(config, t5_dir), model_ckpt_path=str(weights_path),
                               device="cpu")
  if strict:
    loaded = gradio.unwrap_state_dict(load_ckpt_state_dict(str(weights_path)), config["model_type"])
    expected = set(model.state_dict())
    if set(loaded) != expected:
      raise AssertionError(f"{weights_path}: keys differ from the model's: missing "
                           f"{sorted(expected - set(loaded))[:5]}, unexpected {sorted(set(loaded) - expected)[:5]}")
  return SATModel(model.eval().requires_grad_(False), config, Path(t5_dir))


# ----------------------------------------------------------------------------- fixed noise


class _TorchWithQueuedNoise:
  """Stands for `torch` inside one SAT module: randn / randn_like pop the next queued array."""

  def __init__(self, queue: list, log: list):
    self._queue, self._log = queue, log

  def __getattr__(self, name):
    return getattr(torch, name)

  def _next(self, shape, dtype, device, fn):
    if not self._queue:
      raise AssertionError(f"SAT drew more random arrays than given (call {len(self._log) + 1}: {fn}{tuple(shape)})")
    array = self._queue.pop(0)
    if tuple(array.shape) != tuple(shape):
      raise AssertionError(f"SAT's {fn} draw {len(self._log) + 1} has shape {tuple(shape)}, the given array "
                           f"{tuple(array.shape)}")
    self._log.append((fn, tuple(shape)))
    return torch.as_tensor(np.asarray(array), dtype=dtype or torch.float32, device=device)

  def randn(self, *size, dtype=None, device=None, **kwargs):
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (list, tuple, torch.Size)) else size
    return self._next(shape, dtype, device, "torch.randn")

  def randn_like(self, x, dtype=None, device=None, **kwargs):
    return self._next(x.shape, dtype or x.dtype, device or x.device, "torch.randn_like")


_NOISY_MODULES = {"generation": _sat_generation, "sampling": _sat_sampling, "bottleneck": _sat_bottleneck}


@contextlib.contextmanager
def fixed_noise(generation=(), sampling=(), bottleneck=()):
  """Within the block, SAT's `torch.randn`/`torch.randn_like` calls in inference/generation.py
  (initial noise), inference/sampling.py (ping-pong's per-step noise, ...) and models/bottleneck.py
  (VAE sampling) return the given arrays, in order. On exit every array must have been used."""
  queues = {"generation": list(generation), "sampling": list(sampling), "bottleneck": list(bottleneck)}
  logs = {key: [] for key in queues}
  saved = {key: module.torch for key, module in _NOISY_MODULES.items()}
  try:
    for key, module in _NOISY_MODULES.items():
      module.torch = _TorchWithQueuedNoise(queues[key], logs[key])
    yield logs
  finally:
    for key, module in _NOISY_MODULES.items():
      module.torch = saved[key]
  left = {key: len(q) for key, q in queues.items() if q}
  if left:
    raise AssertionError(f"SAT did not use all given noise arrays (left over: {left}; drawn: {logs})")


@contextlib.contextmanager
def t5_precision(ref: SATModel, t5_dtype: str):
  """Run SAT's T5 in float16 (as SAT does) or float32 for the block; restores float16 after."""
  dtypes = {"float16": torch.float16, "float32": torch.float32}
  if t5_dtype not in dtypes:
    raise ValueError(f"t5_dtype must be 'float16' or 'float32', got {t5_dtype!r}")
  t5_modules = [c.model for c in ref.model.conditioner.conditioners.values() if type(c).__name__ == "T5Conditioner"]
  before = [next(m.parameters()).dtype for m in t5_modules]
  for m in t5_modules:
    m.to(dtypes[t5_dtype])
  try:
    yield
  finally:
    for m, dtype in zip(t5_modules, before):
      m.to(dtype)


# ----------------------------------------------------------------------------- functions (numpy in/out)


def _np(x: torch.Tensor) -> np.ndarray:
  return x.detach().to(torch.float32).cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()


def _t(x, dtype=torch.float32) -> torch.Tensor | None:
  return None if x is None else torch.as_tensor(np.asarray(x), dtype=dtype)


def _metadata(prompts, seconds_total) -> list[dict]:
  if isinstance(seconds_total, (int, float)):
    seconds_total = [seconds_total] * len(prompts)
  if len(seconds_total) != len(prompts):
    raise ValueError("one seconds_total per prompt")
  return [{"prompt": p, "seconds_total": float(s)} for p, s in zip(prompts, seconds_total)]


def conditioning(ref: SATModel, prompts: list[str], seconds_total, *, t5_dtype: str = "float16") -> dict:
  """SAT's conditioner + get_conditioning_inputs. Returns numpy:
    input_ids, attention_mask (B, L)         SAT's tokenizer call (padding to max_length, truncation)
    prompt (B, L, 768)                       T5 tokens, padded positions zeroed (padding_mode "zero")
    prompt_mask (B, L)                       bool; the DiT ignores it (dit.py:411-417)
    seconds_total (B, 1, 768)                number conditioner output
    cross_attn_cond (B, L + 1, 768)          [prompt tokens, seconds_total token]
    cross_attn_mask (B, L + 1)
    global_cond (B, 768)                     seconds_total embedding (global_cond_ids)
  The last three are what the DiT and the samplers take (`dit_forward`, `sample`, `invert`)."""
  metadata = _metadata(prompts, seconds_total)
  with torch.no_grad(), t5_precision(ref, t5_dtype):
    tensors = ref.model.conditioner(metadata, "cpu")
    inputs = ref.model.get_conditioning_inputs(tensors)
  t5 = ref.model.conditioner.conditioners["prompt"]
  encoded = t5.tokenizer(list(prompts), truncation=True, max_length=t5.max_length, padding="max_length",
                         return_tensors="np")
  return {
      "input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
      "prompt": _np(tensors["prompt"][0]), "prompt_mask": _np(tensors["prompt"][1]),
      "seconds_total": _np(tensors["seconds_total"][0]),
      "cross_attn_cond": _np(inputs["cross_attn_cond"]), "cross_attn_mask": _np(inputs["cross_attn_mask"]),
      "global_cond": _np(inputs["global_cond"]),
  }


def _cond_inputs(cond: dict, negative: dict | None = None) -> dict:
  inputs = {"cross_attn_cond": _t(cond["cross_attn_cond"]), "cross_attn_mask": _t(cond["cross_attn_mask"]),
            "global_cond": _t(cond["global_cond"])}
  if negative is not None:
    inputs.update({"negative_cross_attn_cond": _t(negative["cross_attn_cond"]),
                   "negative_cross_attn_mask": _t(negative["cross_attn_mask"]),
                   "negative_global_cond": _t(negative["global_cond"])})
  return inputs


def dit_forward(ref: SATModel, x, t, cond: dict, *, cfg_scale: float = 1.0, apg_scale: float = 1.0,
                negative: dict | None = None, return_hidden_states: bool = False, **kwargs):
  """One call of the DiT as the samplers make it: `model.model(x, t, **conditioning, cfg_scale=...)`
  (DiTWrapper -> DiffusionTransformer.forward). x (B, C, T), t (B,) in [0, 1]; cond from
  `conditioning`. Returns the network output v (B, C, T); with cfg_scale != 1 the guided v
  (CFG on the denoised estimates, APG when apg_scale > 0: SAT's default is apg_scale=1).
  return_hidden_states: also the residual stream after each block, (B, 1 + T, width) each."""
  with torch.no_grad():
    out = ref.model.model(_t(x), _t(t), cfg_scale=cfg_scale, apg_scale=apg_scale, batch_cfg=True,
                          return_info=return_hidden_states, **_cond_inputs(cond, negative), **kwargs)
  if return_hidden_states:
    out, info = out
    return _np(out), [_np(h) for h in info["hidden_states"]]
  return _np(out)


def make_dist_shift(options: dict | None):
  """The sampling distribution shift SAT builds from `sampling_distribution_shift_options`
  (None: the default LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0))."""
  if options is None:
    return _sat_sampling.LogSNRShift(rate=0, anchor_logsnr=-6.2, logsnr_end=2.0)
  return ConditionedDiffusionModelWrapper._create_dist_shift(options)


def rf_schedule(steps: int, *, shift_options: dict | None = None, ref: SATModel | None = None,
                seq_len: int = LATENT_FRAMES, sigma_max: float = 1.0) -> np.ndarray:
  """SAT's `build_schedule(steps, include_endpoint=True)` (steps + 1 values from sigma_max to 0)
  warped by the model's `sampling_dist_shift` (ref given) or by the shift built from shift_options.
  seq_len only matters for length-dependent shifts (rate != 0, flux, full)."""
  dist_shift = ref.model.sampling_dist_shift if ref is not None else make_dist_shift(shift_options)
  t = _sat_sampling.build_schedule(steps=steps, sigma_max=sigma_max, dist_shift=dist_shift,
                                   fallback_seq_len=seq_len, include_endpoint=True, device="cpu")
  return _np(t)


def sample(ref: SATModel, x_T, cond: dict, *, steps: int, sampler_type: str | None = None, cfg_scale: float = 1.0,
           apg_scale: float = 1.0, step_noise=None, negative: dict | None = None, init_data=None,
           init_noise_level: float = 1.0, return_trajectory: bool = False, **sampler_kwargs):
  """SAT's `sample_diffusion` on the DiT with the model's own objective and sampling_dist_shift,
  decode=False. x_T (B, C, T) is x at t = sigma_max (pure noise for sigma_max = 1); with init_data,
  SAT starts from init_data * (1 - level) + x_T * level. sampler_type None: SAT's default for the
  objective ("pingpong" for rf_denoiser, "euler" otherwise); also "dpmpp", "rk4".
  step_noise: the arrays ping-pong draws with torch.randn_like, one per step, each (B, C, T) (the
  last one is multiplied by t = 0); None for the deterministic samplers.
  Returns the final latents (B, C, T); with return_trajectory also SAT's per-step callback values
  {"x": [...], "denoised": [...], "t": [...]} (x before each step)."""
  trajectory = {"x": [], "denoised": [], "t": []}

  def callback(info):
    trajectory["x"].append(_np(info["x"]))
    trajectory["denoised"].append(_np(info["denoised"]))
    t = info["t"]
    trajectory["t"].append(float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t))

  with torch.no_grad(), fixed_noise(sampling=[] if step_noise is None else list(step_noise)):
    out = _sat_sampling.sample_diffusion(
        ref.model.model, _t(x_T), _cond_inputs(cond, negative), ref.objective, steps, cfg_scale=cfg_scale,
        pretransform=ref.model.pretransform, dist_shift=ref.model.sampling_dist_shift, sampler_type=sampler_type,
        batch_cfg=True, rescale_cfg=True, apg_scale=apg_scale, init_data=_t(init_data),
        init_noise_level=init_noise_level, callback=callback if return_trajectory else None, disable_tqdm=True,
        decode=False, **sampler_kwargs)
  return (_np(out), trajectory) if return_trajectory else _np(out)


def vae_encode_mean(ref: SATModel, audio) -> np.ndarray:
  """Posterior mean: SAT's Oobleck encoder on audio (B, 2, N), first half of its channels
  (VAEBottleneck splits mean | pre-softplus scale), divided by the pretransform's scale (1.0)."""
  pretransform = ref.model.pretransform
  with torch.no_grad():
    moments = pretransform.model.encoder(_t(audio))
    mean, _ = moments.chunk(2, dim=1)
  return _np(mean / pretransform.scale)


def vae_encode(ref: SATModel, audio, noise) -> np.ndarray:
  """SAT's full pretransform.encode (samples mean + (softplus(scale) + 1e-4) * noise) with the given
  noise (B, latent, N / ratio) as the bottleneck's randn_like draw."""
  with torch.no_grad(), fixed_noise(bottleneck=[noise]):
    return _np(ref.model.pretransform.encode(_t(audio)))


def vae_decode(ref: SATModel, latents) -> np.ndarray:
  """SAT's pretransform.decode: latents (B, latent, T) -> audio (B, 2, T * ratio)."""
  with torch.no_grad():
    return _np(ref.model.pretransform.decode(_t(latents)))


def generate(ref: SATModel, prompts: list[str], seconds_total, init_noise, *, steps: int, step_noise=None,
             cfg_scale: float = 1.0, sampler_type: str | None = None, apg_scale: float = 1.0,
             negative_prompts: list[str] | None = None, return_latents: bool = False,
             t5_dtype: str = "float16", **kwargs) -> np.ndarray:
  """SAT's `generate_diffusion_cond` end to end with init_noise (B, C, T) as its torch.randn draw
  and step_noise (ping-pong only) as the sampler's per-step draws. The sample length is T latent
  frames (sample_size = T * ratio). sampler_type None passes nothing, and generate_diffusion_cond
  then uses "euler" for EVERY objective (generation.py:278); the SAO Small model card passes
  "pingpong". Returns audio (B, 2, T * ratio), or the latents with return_latents."""
  init_noise = np.asarray(init_noise)
  batch, _, frames = init_noise.shape
  if len(prompts) != batch:
    raise ValueError("one prompt per batch row of init_noise")
  negative = None if negative_prompts is None else _metadata(negative_prompts, seconds_total)
  if sampler_type is not None:
    kwargs["sampler_type"] = sampler_type
  with torch.no_grad(), t5_precision(ref, t5_dtype), \
      fixed_noise(generation=[init_noise], sampling=[] if step_noise is None else list(step_noise)):
    out = _sat_generation.generate_diffusion_cond(
        ref.model, steps=steps, cfg_scale=cfg_scale, conditioning=_metadata(prompts, seconds_total),
        negative_conditioning=negative, batch_size=batch, sample_size=frames * ref.downsampling_ratio, seed=0,
        device="cpu", return_latents=return_latents, apg_scale=apg_scale, disable_tqdm=True, **kwargs)
  return _np(out)


def invert(ref: SATModel, latents, noise, cond: dict, *, steps: int, gamma: float = 0.3,
           unconditional: bool = False, sigma_max: float = 1.0, cfg_scale: float = 1.0) -> np.ndarray:
  """SAT's RF-Inversion (`invert_audio`) of clean latents (B, C, T) towards the given noise (its
  y_1), called directly with device="cpu" as generate_diffusion_cond would call it (it does not pass
  a device, so through generate it only runs on CUDA). unconditional: cfg_dropout_prob 1 (the text
  tokens zeroed), else 0; the caller chooses the prompt in cond (generate uses "" when not
  unconditional)."""
  params = {"inversion_steps": steps, "inversion_gamma": gamma, "inversion_unconditional": unconditional,
            "inversion_sigma_max": sigma_max, "inversion_cfg_scale": cfg_scale}
  with torch.no_grad():
    out = invert_audio(ref.model.model, _t(latents), noise=_t(noise), inversion_params=params, device="cpu",
                       cfg_dropout_prob=1.0 if unconditional else 0.0, **_cond_inputs(cond))
  return _np(out)
