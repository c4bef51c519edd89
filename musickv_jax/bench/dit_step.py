"""Our DiT call and our edit step against diffusers' StableAudioDiTModel, in one process, on the
same weights (ours, exported through the converter's name tables), shapes and threads.

  dit        one DiT call on `batch` rows (4 = a source and one edit, with CFG)
  edit_step  one sampling step as musickv-edit runs it: the DiT with MusicKV injection in the
             vital layers (20, 3, 4), CFG and the solver update (ours: guided.sample over one
             step; diffusers: its DiT with KV-blending processors in those layers)
For each: median time over the repeats after a warm-up call, compile time (ours), the FLOPs of
the call (dense layers and attention), the FLOP/s achieved and their fraction of that framework's
own matmul peak measured in the same run, memory, and ours / diffusers.
A Stable Audio 3 config (family sa3) is dispatched to bench/sa3.py: its DiT call against diffusers'
StableAudio3DiTModel.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.bench.measure import (
  call_figures,
  dit_flops,
  matmul_peaks,
  time_calls,
  xla_memory,
)
from musickv_jax.config import ModelConfig
from musickv_jax.models.dit import StableAudioDiT
from musickv_jax.pipeline import kv_schedules, presets
from musickv_jax.sampling import guided, kv, sampler, schedules
from musickv_jax.sampling import rows as rows_lib


@dataclasses.dataclass
class Inputs:
  x: np.ndarray  # (rows, C, T) model input
  t: np.ndarray  # (rows,)
  cross: np.ndarray  # (rows, 130, cond_input_dim)
  glob: np.ndarray  # (rows, global_cond_dim)


def has_diffusers_class(config: ModelConfig) -> bool:
  """diffusers' StableAudioDiTModel is Stable Audio Open 1.0's DiT; the other family members
  (q/k norms, other number conditioners) are timed against stable-audio-tools' own DiT."""
  return config.dit.qk_norm == "none" and config.conditioner.numbers == ("seconds_start", "seconds_total")


def make_inputs(config: ModelConfig, rows: int, frames: int) -> Inputs:
  rng = np.random.default_rng(0)
  d = config.dit
  return Inputs(x=rng.normal(size=(rows, d.io_channels, frames)).astype(np.float32),
                t=np.full((rows,), 0.5, np.float32),
                cross=rng.normal(size=(rows, config.cross_tokens, d.cond_input_dim)).astype(np.float32),
                glob=rng.normal(size=(rows, d.global_cond_dim)).astype(np.float32))


def ours(config: ModelConfig, dit_params, inputs: Inputs, repeats: int, peak: float) -> dict:
  """Our DiT call and edit step."""
  cfg = config.dit
  rows, _, frames = inputs.x.shape
  flops = dit_flops(cfg, rows, frames, inputs.cross.shape[1])
  dit = StableAudioDiT(cfg)
  forward = jax.jit(lambda p, x, t, c, g: dit.apply({"params": p}, x, t, c, g)[0])
  args = (dit_params, *map(jnp.asarray, (inputs.x, inputs.t, inputs.cross, inputs.glob)))
  start = time.perf_counter()
  compiled = forward.lower(*args).compile()
  compile_s = time.perf_counter() - start
  results = {"dit": call_figures(time_calls(lambda: compiled(*args).block_until_ready(), repeats), flops, peak, compile_s,
                            xla_memory(compiled))}

  prompts = rows // rows_lib.branches(True)  # CFG: [uncond; cond] rows of a source and its edits
  layers = presets.default_for(config).vital_layers
  # prompt 0 the source, every other prompt an edit of it at weight 0.5 in the vital layers
  weights = kv.injection_weights(kv.per_edit(kv_schedules.constant(1, len(layers), 0.5), prompts - 1), layers,
                                 [-1, *range(prompts - 1)], cfg.depth)
  controls = kv.joint_controls(weights, np.zeros((prompts,), np.int32), True, layers, cfg.depth)
  cond = guided.GuidedConditioning(jnp.asarray(inputs.cross), jnp.asarray(inputs.glob), jnp.full((prompts,), 7.0))
  plan = sampler.make_plan(np.array([schedules.SIGMA_MAX, 100.0], np.float32))  # one step, not the last
  x_init = jnp.asarray(inputs.x[:prompts] * schedules.SIGMA_MAX)
  step = jax.jit(lambda p, x: guided.sample(p, cond, x, plan, jax.random.key(0), controls, dit_config=cfg)[0])
  start = time.perf_counter()
  compiled = step.lower(dit_params, x_init).compile()
  compile_s = time.perf_counter() - start
  results["edit_step"] = call_figures(time_calls(lambda: compiled(dit_params, x_init).block_until_ready(), repeats), flops,
                                 peak, compile_s, xla_memory(compiled))
  return results


def stable_audio_tools(config: ModelConfig, params, inputs: Inputs, repeats: int, peak: float,
                       ours: np.ndarray | None = None) -> dict:
  """stable-audio-tools' DiT call (the reference of the family members diffusers lacks); with `ours`
  (our output on the same inputs) also the largest difference, relative to the largest value."""
  import torch

  from musickv_jax.bench.torch_reference import sat_dit

  rows, _, frames = inputs.x.shape
  flops = dit_flops(config.dit, rows, frames, inputs.cross.shape[1])
  model = sat_dit(config, params)
  args = (torch.from_numpy(inputs.x), torch.from_numpy(inputs.t))
  kwargs = dict(cross_attn_cond=torch.from_numpy(inputs.cross), global_embed=torch.from_numpy(inputs.glob))
  with torch.no_grad():
    result = {"dit": call_figures(time_calls(lambda: model(*args, **kwargs), repeats), flops, peak)}
    if ours is not None:
      theirs = model(*args, **kwargs).numpy()
      result["dit"]["max_error_ratio"] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
  return result


def diffusers(config: ModelConfig, params: dict, inputs: Inputs, repeats: int, peak: float) -> dict:
  """diffusers' DiT call, and the same with KV-blending processors in the vital layers."""
  import torch
  from diffusers.models.embeddings import get_1d_rotary_pos_embed

  from musickv_jax.bench.torch_reference import KVBlendProcessor, diffusers_dit

  cfg = config.dit
  rows, _, frames = inputs.x.shape
  flops = dit_flops(cfg, rows, frames, inputs.cross.shape[1])
  model = diffusers_dit(config, params)
  args = (torch.from_numpy(inputs.x), torch.from_numpy(inputs.t))
  kwargs = dict(encoder_hidden_states=torch.from_numpy(inputs.cross),
                global_hidden_states=torch.from_numpy(inputs.glob)[:, None],
                rotary_embedding=get_1d_rotary_pos_embed(cfg.rotary_dim, frames + 1, use_real=True,
                                                         repeat_interleave_real=False), return_dict=False)
  prompts = rows // rows_lib.branches(True)
  blends = [(branch * prompts + p, branch * prompts, 0.5) for branch in range(2) for p in range(1, prompts)]
  with torch.no_grad():
    results = {"dit": call_figures(time_calls(lambda: model(*args, **kwargs), repeats), flops, peak)}
    for layer in presets.default_for(config).vital_layers:
      model.transformer_blocks[layer].attn1.set_processor(KVBlendProcessor(blends))
    results["edit_step"] = call_figures(time_calls(lambda: model(*args, **kwargs), repeats), flops, peak)
  return results


def run(config: ModelConfig, lengths, *, batch: int = 4, repeats: int = 3, compare_torch: bool = True,
        log=print) -> dict:
  """The whole comparison; returns a JSON-ready dict. A Stable Audio 3 model (another DiT, another
diffusers class) is timed by bench/sa3.py: its DiT call on `batch` rows against diffusers'."""
  if config.is_sa3:
    from musickv_jax.bench import sa3

    return sa3.run(config, lengths, rows=batch, repeats=repeats, compare_torch=compare_torch, log=log)
  from musickv_jax.bench.measure import cpu_name
  from musickv_jax.models.sao import random_params

  report = {"device": str(jax.devices()[0]), "cpu": cpu_name(), "config": config.name, "depth": config.dit.depth,
            "dtype": config.dit.dtype, "attention": config.dit.attention, "batch": batch, "lengths": {}}
  matmul_peaks(report, compare_torch, log)
  params = random_params(config, 0)
  dit_params = jax.tree.map(lambda a: a.astype(config.dit.dtype), params.dit)
  for frames in lengths:
    inputs = make_inputs(config, batch, frames)
    entry = {"ours": ours(config, dit_params, inputs, repeats, report["matmul_peak_gflop_per_s"]["jax"] * 1e9)}
    if compare_torch and has_diffusers_class(config):
      entry["diffusers"] = diffusers(config, params, inputs, repeats,
                                     report["matmul_peak_gflop_per_s"]["torch"] * 1e9)
    elif compare_torch:
      out, _ = StableAudioDiT(config.dit).apply({"params": dit_params}, *map(jnp.asarray, (inputs.x, inputs.t,
                                                                                          inputs.cross, inputs.glob)))
      entry["stable_audio_tools"] = stable_audio_tools(config, params, inputs, repeats,
                                                       report["matmul_peak_gflop_per_s"]["torch"] * 1e9,
                                                       np.asarray(out, np.float32))
    for name in REFERENCES:
      if name in entry:
        entry[f"ours_over_{name}"] = {case: round(entry["ours"][case]["seconds"] / entry[name][case]["seconds"], 3)
                                      for case in entry[name]}
    report["lengths"][str(frames)] = entry
    log(f"T={frames}: " + table_row(entry))
  return report


REFERENCES = ("diffusers", "stable_audio_tools")  # the torch side: SAO 1.0's diffusers class, else SAT's own DiT


def table_row(entry: dict) -> str:
  parts = []
  for case in ("dit", "edit_step"):
    ours_s = entry["ours"][case]["seconds"]
    text = f"{case} ours {ours_s:.2f} s"
    for name in REFERENCES:
      if case in entry.get(name, {}):
        text += f" vs {name} {entry[name][case]['seconds']:.2f} s ({entry[f'ours_over_{name}'][case]:.3f})"
    parts.append(text)
  return "; ".join(parts)


def markdown_table(report: dict) -> str:
  """The report as the table in docs/performance.md."""
  if report.get("family") == "sa3":
    from musickv_jax.bench import sa3

    return sa3.dit_summary(report)
  lines = ["| T | case | framework | seconds | compile s | GFLOP/s | of matmul peak | peak RSS + MiB | ours / reference |",
           "|---|---|---|---|---|---|---|---|---|"]
  for frames, entry in report["lengths"].items():
    for case in ("dit", "edit_step"):
      for framework in ("ours", *REFERENCES):
        if case not in entry.get(framework, {}):
          continue
        r = entry[framework][case]
        ratio = next((entry[f"ours_over_{name}"].get(case, "") for name in REFERENCES if f"ours_over_{name}" in entry),
                     "") if framework == "ours" else ""
        lines.append(f"| {frames} | {case} | {framework} | {r['seconds']:.2f} | {r.get('compile_s', '')} | "
                     f"{r['gflop_per_s']} | {r['fraction_of_matmul_peak']:.2f} | {r['peak_rss_increase_mib']:.0f} | {ratio} |")
  return "\n".join(lines)
