"""musickv-benchmark: DiT forward-pass timing (one sampling step's model call) for chosen latent
lengths, with random weights of a named config; optionally the diffusers reference in the same run.

  musickv-benchmark --config sao-1.0 --lengths 1024,384 --batch 2 [--torch]

Batch 2 is one prompt with classifier-free guidance. Prints compile time and the median of
--repeats timed calls per length; with --torch, the same for diffusers' StableAudioDiTModel
and the ratio ours/diffusers (needs torch and diffusers: the test requirements).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from absl import flags

from musickv_jax.cli import options
from musickv_jax.cli.outputs import write_json
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point


def define(fv: Flags) -> None:
  flags.DEFINE_string("config", "sao-1.0", "Named model config.", flag_values=fv)
  flags.DEFINE_list("lengths", ["1024", "384"], "Latent lengths (frames) to time.", flag_values=fv)
  flags.DEFINE_integer("batch", 2, "Rows per DiT call (2 = one prompt with CFG).", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "Timed calls per length (the median is reported).", flag_values=fv)
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.", flag_values=fv)
  flags.DEFINE_bool("torch", False, "Also time diffusers' StableAudioDiTModel in the same run.", flag_values=fv)
  flags.DEFINE_string("json_out", None, "Also write the results as JSON here.", flag_values=fv)


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _torch_dit(cfg, dtype: str):
  try:
    import torch
    from diffusers import StableAudioDiTModel
  except ImportError:
    raise UsageError("--torch needs torch and diffusers (the test requirements)") from None
  dit = StableAudioDiTModel(
      sample_size=cfg.sample_size, in_channels=cfg.io_channels, num_layers=cfg.depth,
      attention_head_dim=cfg.head_dim, num_attention_heads=cfg.num_heads,
      num_key_value_attention_heads=cfg.cross_kv_heads, out_channels=cfg.io_channels,
      cross_attention_dim=cfg.cond_token_dim, time_proj_dim=cfg.time_features_dim,
      global_states_input_dim=cfg.global_cond_dim, cross_attention_input_dim=cfg.cond_input_dim).eval()
  return dit.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])


def body(fv: Flags) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from musickv_jax.config import named_config
  from musickv_jax.models.dit import StableAudioDiT
  from musickv_jax.models.sao import random_params

  lengths = options.int_list(fv.lengths, "lengths")
  if fv.repeats < 1 or fv.batch < 1 or any(n < 1 for n in lengths):
    raise UsageError("--repeats, --batch and --lengths must be positive")
  config = named_config(fv.config).with_dtype(fv.dtype)
  cfg = config.dit
  params = jax.tree.map(lambda a: a.astype(fv.dtype), random_params(config, 0)["dit"])
  module = StableAudioDiT(cfg)
  forward = jax.jit(lambda p, x, t, c, g: module.apply({"params": p}, x, t, c, g)[0])
  results = {"device": str(jax.devices()[0]), "config": fv.config, "dtype": fv.dtype, "batch": fv.batch,
             "lengths": {}}
  torch_dit = _torch_dit(cfg, fv.dtype) if fv.torch else None

  rng = np.random.default_rng(0)
  for length in lengths:
    x = jnp.asarray(rng.normal(size=(fv.batch, cfg.io_channels, length)), jnp.float32)
    t = jnp.full((fv.batch,), 0.5, jnp.float32)
    cross = jnp.asarray(rng.normal(size=(fv.batch, 130, cfg.cond_input_dim)), jnp.float32)
    glob = jnp.asarray(rng.normal(size=(fv.batch, cfg.global_cond_dim)), jnp.float32)
    start = time.perf_counter()
    compiled = forward.lower(params, x, t, cross, glob).compile()
    compile_s = time.perf_counter() - start
    compiled(params, x, t, cross, glob).block_until_ready()
    ours = _time(lambda: compiled(params, x, t, cross, glob).block_until_ready(), fv.repeats)
    entry = {"compile_s": round(compile_s, 2), "ours_s": round(ours, 3)}
    if torch_dit is not None:
      import torch
      from diffusers.models.embeddings import get_1d_rotary_pos_embed

      dtype = next(torch_dit.parameters()).dtype
      args = (torch.from_numpy(np.asarray(x)).to(dtype), torch.from_numpy(np.asarray(t)))
      kwargs = dict(encoder_hidden_states=torch.from_numpy(np.asarray(cross)).to(dtype),
                    global_hidden_states=torch.from_numpy(np.asarray(glob))[:, None].to(dtype),
                    rotary_embedding=get_1d_rotary_pos_embed(cfg.rotary_dim, length + 1, use_real=True,
                                                             repeat_interleave_real=False), return_dict=False)
      with torch.no_grad():
        torch_dit(*args, **kwargs)
        ref = _time(lambda: torch_dit(*args, **kwargs), fv.repeats)
      entry.update(diffusers_s=round(ref, 3), ours_over_diffusers=round(ours / ref, 3))
    results["lengths"][length] = entry
    print(f"T={length}: {json.dumps(entry)}", flush=True)
  if len(lengths) > 1:
    base = results["lengths"][lengths[0]]["ours_s"]
    for length in lengths[1:]:
      print(f"T={length} takes {results['lengths'][length]['ours_s'] / base:.2f}x the time of T={lengths[0]}")
  if fv.json_out:
    write_json(Path(fv.json_out), results)


COMMAND = Command(name="musickv-benchmark", doc=__doc__, define=define, body=body, multi_value_flags=())
main = entry_point(COMMAND)
