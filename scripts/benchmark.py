"""DiT forward-pass timing (one sampling step's model call) for chosen latent lengths, with random
weights of a named config; optionally the diffusers reference in the same run.

  python scripts/benchmark.py --config sao-1.0 --lengths 1024,384 --batch 2 [--torch]

Batch 2 is one prompt with classifier-free guidance. Prints compile time and the median of
--repeats timed calls per length; with --torch, the same for diffusers' StableAudioDiTModel
and the ratio ours/diffusers (needs the test requirements).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "sao-1.0", "Named model config.")
flags.DEFINE_list("lengths", ["1024", "384"], "Latent lengths (frames) to time.")
flags.DEFINE_integer("batch", 2, "Rows per DiT call (2 = one prompt with CFG).")
flags.DEFINE_integer("repeats", 3, "Timed calls per length (the median is reported).")
flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.")
flags.DEFINE_bool("torch", False, "Also time diffusers' StableAudioDiTModel in the same run.")
flags.DEFINE_string("json_out", None, "Also write the results as JSON here.")


def _time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from musickv_jax.config import named_config
  from musickv_jax.models.dit import StableAudioDiT
  from musickv_jax.models.sao import random_params

  config = named_config(FLAGS.config).with_dtype(FLAGS.dtype)
  cfg = config.dit
  params = jax.tree.map(lambda a: a.astype(FLAGS.dtype), random_params(config, 0)["dit"])
  module = StableAudioDiT(cfg)
  forward = jax.jit(lambda p, x, t, c, g: module.apply({"params": p}, x, t, c, g)[0])
  lengths = cli_common.int_list(FLAGS.lengths, "lengths")
  results = {"device": str(jax.devices()[0]), "config": FLAGS.config, "dtype": FLAGS.dtype, "batch": FLAGS.batch,
             "lengths": {}}
  torch_dit = None
  if FLAGS.torch:
    import torch
    from diffusers import StableAudioDiTModel
    from diffusers.models.embeddings import get_1d_rotary_pos_embed
    torch_dit = StableAudioDiTModel(
        sample_size=cfg.sample_size, in_channels=cfg.io_channels, num_layers=cfg.depth,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.num_heads,
        num_key_value_attention_heads=cfg.cross_kv_heads, out_channels=cfg.io_channels,
        cross_attention_dim=cfg.cond_token_dim, time_proj_dim=cfg.time_features_dim,
        global_states_input_dim=cfg.global_cond_dim, cross_attention_input_dim=cfg.cond_input_dim).eval()
    torch_dit = torch_dit.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype])

  rng = np.random.default_rng(0)
  for length in lengths:
    x = jnp.asarray(rng.normal(size=(FLAGS.batch, cfg.io_channels, length)), jnp.float32)
    t = jnp.full((FLAGS.batch,), 0.5, jnp.float32)
    cross = jnp.asarray(rng.normal(size=(FLAGS.batch, 130, cfg.cond_input_dim)), jnp.float32)
    glob = jnp.asarray(rng.normal(size=(FLAGS.batch, cfg.global_cond_dim)), jnp.float32)
    start = time.perf_counter()
    compiled = forward.lower(params, x, t, cross, glob).compile()
    compile_s = time.perf_counter() - start
    compiled(params, x, t, cross, glob).block_until_ready()
    ours = _time(lambda: compiled(params, x, t, cross, glob).block_until_ready(), FLAGS.repeats)
    entry = {"compile_s": round(compile_s, 2), "ours_s": round(ours, 3)}
    if torch_dit is not None:
      dtype = next(torch_dit.parameters()).dtype
      args = (torch.from_numpy(np.asarray(x)).to(dtype), torch.from_numpy(np.asarray(t)))
      kwargs = dict(encoder_hidden_states=torch.from_numpy(np.asarray(cross)).to(dtype),
                    global_hidden_states=torch.from_numpy(np.asarray(glob))[:, None].to(dtype),
                    rotary_embedding=get_1d_rotary_pos_embed(cfg.rotary_dim, length + 1, use_real=True,
                                                             repeat_interleave_real=False), return_dict=False)
      with torch.no_grad():
        torch_dit(*args, **kwargs)
        ref = _time(lambda: torch_dit(*args, **kwargs), FLAGS.repeats)
      entry.update(diffusers_s=round(ref, 3), ours_over_diffusers=round(ours / ref, 3))
    results["lengths"][length] = entry
    print(f"T={length}: {json.dumps(entry)}", flush=True)
  if len(lengths) > 1:
    base = results["lengths"][lengths[0]]["ours_s"]
    for length in lengths[1:]:
      print(f"T={length} takes {results['lengths'][length]['ours_s'] / base:.2f}x the time of T={lengths[0]}")
  if FLAGS.json_out:
    cli_common.write_json(Path(FLAGS.json_out), results)


if __name__ == "__main__":
  app.run(cli_common.run_main(main), flags_parser=cli_common.parse_flags)
