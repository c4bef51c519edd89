"""Stable Audio 3 benchmarks, ours against diffusers in the same run, on the same machine, weights
(ours, exported through the converter's name tables: bench/sa3_torch.py), shapes and threads.

  dit_call    one DiT call (family.apply_dit with the text's padding mask) on `rows` rows of
              `frames` latent frames (2 rows of 323: a 30 s edit's source and edit at guidance 1,
              the distilled model's default, so no CFG rows), against diffusers' StableAudio3DiTModel:
              median seconds, compile seconds (ours), TFLOP (sa3_dit_flops), GFLOP/s and their
              fraction of that framework's own float32 matmul peak measured in the same run, the
              largest difference of the outputs, ours / diffusers.
  whole_edit  a whole MusicKV edit (source + 1 edit, the model's defaults: 8 ping-pong steps,
              guidance 1, the kept span decoded) on random weights:
                warm       pipeline.edit in this process after a first run, with its parts (text
                           encoder and conditioning, sampling, decode)
                cold       musickv-edit from a fresh process on a converted checkpoint on disk, no
                           compilation cache, and its parts in a fresh process of their own
                           (bench/edit_parts.py)
                reference  diffusers' StableAudio3Pipeline holding the same weights: the source and
                           the edit generated separately (two calls, no injection: diffusers has no
                           MusicKV), the same steps and guidance, with the same parts
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.bench.measure import call_figures, cpu_name, matmul_peaks, time_calls, xla_memory
from musickv_jax.config import ModelConfig, SA3DiTConfig
from musickv_jax.models import family

DEFAULT_SECONDS = 30.0  # the edit benchmarked: 30 s (323 latent frames at 44.1 kHz / 4096)
TEXT_TOKENS = 16  # valid text tokens of the benchmark's prompts (left-padded to the encoder's max_length)


# ----------------------------------------------------------------------------- FLOPs


def sa3_dit_flops(config: ModelConfig | SA3DiTConfig, rows: int, frames: int, cond_tokens: int = 257,
                  local: bool = False) -> float:
  """Multiply-adds x 2 of one SA3 DiT call on `rows` rows of `frames` latent frames with
  `cond_tokens` context tokens (256 text tokens + the duration token in the pipelines): every dense
  layer and both attention products; the elementwise work (norms, softmax, rotary, gates) is not
  counted. S = memory tokens + frames / patch_size, D the width, b = 2 branches with differential
  attention (else 1). Per row:
    conditioning  context MLP (N tokens: cond_token_dim -> D -> D), timestep MLP (features -> D -> D),
                  duration MLP (global_cond_dim -> D -> D), AdaLN modulation MLP (D -> D -> 6 D),
                  once per call (each block only adds its own vector)
    in / out      the 1x1 pre- and post-convolutions (C -> C each), proj_in / proj_out (p C <-> D)
    per block     self-attention: qkv (D -> (2b + 1) D: [q1 | q2 | k1 | k2 | v]), Q K^T and P V per
                  branch (2 S^2 D each), out (D -> D); cross-attention: q (D -> b D), kv of the N
                  context tokens (D -> (b + 1) D), Q K^T and P V per branch (2 S N D each), out;
                  SwiGLU (D -> 2 F, F -> D); the local-conditioning MLP (local_add_cond_dim -> D -> D
                  on the T audio positions) only when `local` (inpainting) conditioning is given.
  """
  cfg = config.dit if isinstance(config, ModelConfig) else config
  d, c, n, m = cfg.embed_dim, cfg.io_channels, cond_tokens, cfg.num_memory_tokens
  tokens = frames // cfg.patch_size
  s = m + tokens
  b = 2 if cfg.differential else 1
  f = cfg.ff_inner_dim
  conditioning = (2 * n * (cfg.cond_token_dim * d + d * d) + 2 * (cfg.time_features_dim * d + d * d)
                  + 2 * (cfg.global_cond_dim * d + d * d) + 2 * (d * d + d * 6 * d))
  io = 2 * 2 * frames * c * c + 2 * 2 * tokens * cfg.patch_size * c * d
  self_attention = 2 * s * d * (2 * b + 1) * d + b * 2 * 2 * s * s * d + 2 * s * d * d
  cross_attention = 2 * s * d * b * d + 2 * n * d * (b + 1) * d + b * 2 * 2 * s * n * d + 2 * s * d * d
  feed_forward = 2 * s * d * 2 * f + 2 * s * f * d
  local_mlp = 2 * frames * (cfg.local_add_cond_dim * d + d * d) if local else 0
  per_block = self_attention + cross_attention + feed_forward + local_mlp
  return float(rows * (conditioning + io + cfg.depth * per_block))


def xla_flops(config: ModelConfig, dit_params, inputs: "Inputs", local: np.ndarray | None = None) -> float:
  """XLA's own count (compiled cost analysis, 'flops') of the DiT call on `inputs` (and the local
  conditioning (rows, local_add_cond_dim, T), if given). XLA counts the elementwise work too, and
  counts the body of a loop once: the blocks run under nn.scan, so this is the whole call only for
  a 1-layer DiT (tests/test_speed.py compares it so)."""
  cfg = config.dit
  forward = jax.jit(lambda p, x, t, c, g, m, l: family.apply_dit(p, cfg, x, t, c, g, cross_mask=m, local_cond=l)[0])
  args = (inputs.x, inputs.t, inputs.cross, inputs.glob, inputs.mask)
  cost = forward.lower(dit_params, *map(jnp.asarray, args), None if local is None else jnp.asarray(local)
                       ).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


# ----------------------------------------------------------------------------- one DiT call


@dataclasses.dataclass
class Inputs:
  x: np.ndarray  # (rows, C, T) model input
  t: np.ndarray  # (rows,) flow time sigma
  cross: np.ndarray  # (rows, N, cond_token_dim) text hidden states + the duration token
  glob: np.ndarray  # (rows, global_cond_dim) the duration embedding
  mask: np.ndarray  # (rows, N) bool: the text's padding mask (True = a token), the duration token True


def make_inputs(config: ModelConfig, rows: int, frames: int) -> Inputs:
  """Random inputs of the pipelines' shapes: N = max_length + 1 context tokens, of which the last
  TEXT_TOKENS text tokens and the duration token are valid (Gemma's tokenizer pads on the left)."""
  rng = np.random.default_rng(0)
  d = config.dit
  n = config.cross_tokens
  mask = np.zeros((rows, n), bool)
  mask[:, max(0, n - 1 - TEXT_TOKENS):] = True
  return Inputs(x=rng.normal(size=(rows, d.io_channels, frames)).astype(np.float32),
                t=np.full((rows,), 0.5, np.float32),
                cross=rng.normal(size=(rows, n, d.cond_token_dim)).astype(np.float32),
                glob=rng.normal(size=(rows, d.global_cond_dim)).astype(np.float32), mask=mask)


def ours(config: ModelConfig, dit_params, inputs: Inputs, repeats: int, peak: float) -> tuple[dict, np.ndarray]:
  """Our jitted DiT call: its result entry and its output (float32)."""
  cfg = config.dit
  rows, _, frames = inputs.x.shape
  flops = sa3_dit_flops(cfg, rows, frames, inputs.cross.shape[1])
  forward = jax.jit(lambda p, x, t, c, g, m: family.apply_dit(p, cfg, x, t, c, g, cross_mask=m)[0])
  args = (dit_params, *map(jnp.asarray, (inputs.x, inputs.t, inputs.cross, inputs.glob, inputs.mask)))
  start = time.perf_counter()
  compiled = forward.lower(*args).compile()
  compile_s = time.perf_counter() - start
  result = call_figures(time_calls(lambda: compiled(*args).block_until_ready(), repeats), flops, peak, compile_s,
                   xla_memory(compiled))
  result["gflop"] = round(flops / 1e9, 3)
  return result, np.asarray(compiled(*args), np.float32)


def diffusers(config: ModelConfig, params, inputs: Inputs, repeats: int, peak: float,
              ours_out: np.ndarray | None = None) -> dict:
  """diffusers' StableAudio3DiTModel call on the same inputs and weights (float32); with `ours_out`
  also the largest difference of the outputs, relative to the largest value."""
  import torch

  from musickv_jax.bench.sa3_torch import diffusers_dit

  rows, _, frames = inputs.x.shape
  model = diffusers_dit(config, params)
  args = (torch.from_numpy(inputs.x), torch.from_numpy(inputs.t))
  kwargs = dict(encoder_hidden_states=torch.from_numpy(inputs.cross),
                global_hidden_states=torch.from_numpy(inputs.glob),
                encoder_attention_mask=torch.from_numpy(inputs.mask), return_dict=False)
  with torch.no_grad():
    flops = sa3_dit_flops(config, rows, frames, inputs.cross.shape[1])
    result = call_figures(time_calls(lambda: model(*args, **kwargs), repeats), flops, peak)
    result["gflop"] = round(flops / 1e9, 3)
    if ours_out is not None:
      theirs = model(*args, **kwargs)[0].numpy()
      result["max_error_ratio"] = float(np.abs(ours_out - theirs).max() / np.abs(theirs).max())
  return result


def run(config: ModelConfig, lengths, *, rows: int = 2, repeats: int = 3, compare_torch: bool = True,
        log=print) -> dict:
  """The DiT call at each length; returns a JSON-ready dict in bench/dit_step.py's layout (one case,
  `dit`), with family 'sa3', the rows and the context tokens."""
  from musickv_jax.models.sao import random_params

  if not config.is_sa3:
    raise ValueError(f"{config.name} is not a Stable Audio 3 model")
  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "family": "sa3",
            "depth": config.dit.depth, "dtype": config.dit.dtype, "attention": config.dit.attention, "batch": rows,
            "cond_tokens": config.cross_tokens, "text_tokens": min(TEXT_TOKENS, config.cross_tokens - 1),
            "lengths": {}}
  matmul_peaks(report, compare_torch, log)
  params = random_params(config, 0)
  dit_params = jax.tree.map(lambda a: a.astype(config.dit.dtype), params.dit)
  for frames in lengths:
    inputs = make_inputs(config, rows, frames)
    result, out = ours(config, dit_params, inputs, repeats, report["matmul_peak_gflop_per_s"]["jax"] * 1e9)
    entry = {"ours": {"dit": result}}
    if compare_torch:
      entry["diffusers"] = {"dit": diffusers(config, params, inputs, repeats,
                                             report["matmul_peak_gflop_per_s"]["torch"] * 1e9, out)}
      entry["ours_over_diffusers"] = {"dit": round(result["seconds"] / entry["diffusers"]["dit"]["seconds"], 3)}
    report["lengths"][str(frames)] = entry
    log(f"T={frames}: " + _row(entry))
  return report


def dit_call(config: ModelConfig, frames: int = 323, rows: int = 2, repeats: int = 3, compare_torch: bool = True,
             log=print) -> dict:
  """One SA3 DiT call of `rows` x `frames`, ours against diffusers' (see run)."""
  return run(config, [frames], rows=rows, repeats=repeats, compare_torch=compare_torch, log=log)


def _row(entry: dict) -> str:
  text = f"dit ours {entry['ours']['dit']['seconds']:.3f} s"
  if "diffusers" in entry:
    text += f" vs diffusers {entry['diffusers']['dit']['seconds']:.3f} s ({entry['ours_over_diffusers']['dit']:.3f})"
  return text


def dit_summary(report: dict) -> str:
  """The DiT call report as a markdown table (docs/performance.md)."""
  peaks = report["matmul_peak_gflop_per_s"]
  lines = [f"{report['config']} DiT call: {report['batch']} rows, {report['cond_tokens']} context tokens, depth "
           f"{report['depth']}, {report['dtype']}, attention {report['attention']}, on {report['cpu']}; float32 "
           f"matmul peak (GFLOP/s): " + ", ".join(f"{k} {v}" for k, v in peaks.items()),
           "",
           "| T | framework | seconds | compile s | TFLOP | GFLOP/s | of own matmul peak | max error | peak RSS + MiB "
           "| ours / diffusers |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for frames, entry in report["lengths"].items():
    for framework in ("ours", "diffusers"):
      if framework not in entry:
        continue
      r = entry[framework]["dit"]
      error = f"{r['max_error_ratio']:.1e}" if "max_error_ratio" in r else ""
      ratio = entry.get("ours_over_diffusers", {}).get("dit", "") if framework == "ours" else ""
      lines.append(f"| {frames} | {framework} | {r['seconds']:.3f} | {r.get('compile_s', '')} | {r['tflop']} | "
                   f"{r['gflop_per_s']} | {r['fraction_of_matmul_peak']:.2f} | {error} | "
                   f"{r['peak_rss_increase_mib']:.0f} | {ratio} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- a whole edit


class _PartClock:
  """Wraps the parts of a diffusers StableAudio3Pipeline (on the instances) to add up their seconds:
  t5_and_conditioning (encode_prompt, encode_duration, prepare_cross_attention), dit (the
  transformer's forward) and decode (vae.decode)."""

  PARTS = {"t5_and_conditioning_s": ("encode_prompt", "encode_duration", "prepare_cross_attention"),
           "decode_s": ("vae.decode",), "dit_s": ("transformer.forward",)}

  def __init__(self, pipe):
    self.seconds = dict.fromkeys(self.PARTS, 0.0)
    for part, names in self.PARTS.items():
      for name in names:
        owner = pipe
        *path, attribute = name.split(".")
        for step in path:
          owner = getattr(owner, step)
        setattr(owner, attribute, self._timed(part, getattr(owner, attribute)))

  def _timed(self, part: str, function):
    def timed(*args, **kwargs):
      start = time.perf_counter()
      try:
        return function(*args, **kwargs)
      finally:
        self.seconds[part] += time.perf_counter() - start
    return timed

  def reset(self) -> None:
    self.seconds = dict.fromkeys(self.PARTS, 0.0)


def reference(model, seconds: float, steps: int, guidance: float, repeats: int, log=print) -> dict:
  """The same edit through diffusers' StableAudio3Pipeline holding the model's weights: the source
  and the edit generated separately (two calls), `steps` steps, guidance `guidance`; the first
  run, then the median of `repeats` runs, each with its parts (sampling = the run less its text
  encoder and conditioning and its decode; dit = the transformer's calls within it)."""
  import torch

  from musickv_jax.bench.job import EDITS, SOURCE
  from musickv_jax.bench.sa3_torch import pipeline

  mark = time.perf_counter()
  pipe = pipeline(model.config, model.params, model.tokenizer)
  build_s = time.perf_counter() - mark
  clock = _PartClock(pipe)
  log(f"diffusers StableAudio3Pipeline holding our weights built in {build_s:.1f} s")

  def one_edit() -> tuple[float, dict]:
    clock.reset()
    start = time.perf_counter()
    for prompt in (SOURCE, EDITS[0]):
      pipe(prompt=prompt, duration=seconds, num_inference_steps=steps, guidance_scale=guidance,
           generator=torch.Generator().manual_seed(0), output_type="np")
    total = time.perf_counter() - start
    parts = dict(clock.seconds)
    parts["sampling_s"] = total - parts["t5_and_conditioning_s"] - parts["decode_s"]
    return total, parts

  with torch.no_grad():
    first, _ = one_edit()
    runs = [one_edit() for _ in range(repeats)]
  parts = {name: round(statistics.median(p[name] for _, p in runs), 3)
           for name in ("t5_and_conditioning_s", "sampling_s", "dit_s", "decode_s")}
  return {"what": "diffusers StableAudio3Pipeline, source and edit generated separately (2 calls), no injection",
          "build_s": round(build_s, 2), "first_run_s": round(first, 2), "runs_s": [round(t, 2) for t, _ in runs],
          "median_s": round(statistics.median(t for t, _ in runs), 2), "steps": steps, "guidance_scale": guidance,
          "calls": 2, "torch_threads": torch.get_num_threads(), "parts": parts}


def whole_edit(config: ModelConfig, seconds: float = DEFAULT_SECONDS, repeats: int = 2, log=print) -> dict:
  """A whole `seconds` MusicKV edit: warm (with parts), cold command line (with parts), and the diffusers
  reference, in one run; returns a JSON-ready dict."""
  from musickv_jax.bench import edit_parts, small_edit
  from musickv_jax.bench.job import EDITS, SOURCE, random_model
  from musickv_jax.pipeline import common
  from musickv_jax.pipeline.settings import GenerationSettings

  if not config.is_sa3:
    raise ValueError(f"{config.name} is not a Stable Audio 3 model")
  frames = common.latent_frames(GenerationSettings(prompts=(SOURCE,), audio_end_in_s=seconds), config)
  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "family": "sa3",
            "dtype": config.dit.dtype, "attention": config.dit.attention, "seconds": seconds,
            "latent_frames": frames, "prompts": [SOURCE, EDITS[0]]}
  mark = time.perf_counter()
  model = random_model(config)
  log(f"random {config.name} weights drawn in {time.perf_counter() - mark:.1f} s")
  # the cold command line first, while this process holds only the weights (at real size it holds
  # them twice, ours and diffusers', once the reference has run)
  report["cold"] = small_edit.cold(config, seconds, log, model=model)
  log(f"cold command line: {report['cold']}")
  report["warm"] = small_edit.warm(config, seconds, repeats, model=model)
  report["warm"]["parts"] = edit_parts.warm_parts(model, SOURCE, EDITS[0], seconds, repeats)
  log(f"warm edit: {report['warm']}")
  warm = report["warm"]
  report["reference"] = reference(model, seconds, warm["steps"], warm["guidance_scale"], repeats, log)
  log(f"reference: {report['reference']}")
  report["reference_over_warm"] = round(report["reference"]["median_s"] / warm["median_s"], 3)
  return report


def _parts(parts: dict) -> str:
  return ", ".join(f"{name[:-2].replace('_', ' ')} {value} s" for name, value in parts.items())


def edit_summary(report: dict) -> str:
  w, c, r = report["warm"], report["cold"], report["reference"]
  return (f"{report['config']}: a {report['seconds']:g} s edit (source + 1 edit, {w['sampler']} {w['steps']} steps, "
          f"guidance {w['guidance_scale']:g}, {report['latent_frames']} latent frames) on {report['cpu']}:\n"
          f"  ours warm (model loaded, programs compiled): {w['median_s']} s (runs {w['runs_s']}, first "
          f"{w['first_run_s']} s); parts: {_parts(w['parts'])}\n"
          f"  ours cold command line: {c['command_line_wall_s']} s wall; parts: {_parts(c['parts'])}\n"
          f"  diffusers StableAudio3Pipeline (source and edit generated separately, no injection, "
          f"{r['torch_threads']} threads): {r['median_s']} s (runs {r['runs_s']}, first {r['first_run_s']} s); "
          f"parts: {_parts(r['parts'])}\n"
          f"  diffusers / ours warm: {report['reference_over_warm']}")


def default_frames(config: ModelConfig, seconds: float = DEFAULT_SECONDS) -> int:
  """Latent frames of `seconds` of audio (323 for 30 s at 44.1 kHz / 4096)."""
  return math.ceil(seconds * config.sample_rate / config.vae.hop_length)
