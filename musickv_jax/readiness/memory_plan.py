"""How many edit rows fit one accelerator: the model's parameters plus, per DiT row, the estimate of
pipeline.memory (the same one that refuses an oversized long recording or batch job), for a full
Stable Audio Open 1.0 window (1024 frames, 47.55 s) and an 11.9 s Stable Audio Open Small window
(256 frames), float32 and bfloat16, with each platform's default attention in half precision
(flash kernels: splash on TPU, cuDNN on GPU; float32: the XLA path, whose logits are held).

The estimate is analytic; `compiled_check` compiles the real-size edit step on this machine's CPU
and reads XLA's memory statistics, to show the analytic figure is an upper bound of a compiled one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from musickv_jax.config import ModelConfig, named_config
from musickv_jax.pipeline import memory
from musickv_jax.readiness import programs as programs_lib
from musickv_jax.sampling import rows as rows_lib

GIB = memory.GIB
USABLE_FRACTION = 0.9  # what a run may take of the device's memory (the runtime, fragmentation)


@dataclasses.dataclass(frozen=True)
class Accelerator:
  name: str
  platform: str  # "tpu" or "cuda"
  memory_gib: float  # per chip / GPU


ACCELERATORS = (
    Accelerator("TPU v4", "tpu", 32), Accelerator("TPU v5e", "tpu", 16), Accelerator("TPU v5p", "tpu", 95),
    Accelerator("TPU v6e", "tpu", 32), Accelerator("A100 80GB", "cuda", 80), Accelerator("H100 80GB", "cuda", 80),
    Accelerator("H200", "cuda", 141e9 / GIB),  # 141 GB
)


@dataclasses.dataclass(frozen=True)
class Window:
  label: str
  config: str  # named config
  frames: int

  @property
  def cfg(self) -> bool:
    """Whether the model's default guidance runs CFG (sampling.rows: 2 DiT rows a prompt)."""
    return rows_lib.uses_cfg([named_config(self.config).diffusion.defaults.guidance_scale], None)


WINDOWS = (Window("SAO 1.0, 47.6 s (1024 frames)", "sao-1.0", 1024),
           Window("SAO Small, 11.9 s (256 frames)", "sao-small", 256),
           Window("SA3 Small, 30 s (323 frames)", "sa3-small", 323),
           Window("SA3 Small, 120 s (1292 frames)", "sa3-small", 1292),
           Window("SA3 Medium, 30 s (323 frames)", "sa3-medium", 323),
           Window("SA3 Medium, 380 s (4096 frames)", "sa3-medium", 4096))


@dataclasses.dataclass(frozen=True)
class Entry:
  accelerator: Accelerator
  window: Window
  dtype: str
  attention: str
  params_gib: float
  row_mib: float  # one DiT row's working memory
  dit_rows: int  # DiT rows that fit
  prompts: int  # prompt rows (a source or an edit each) that fit: DiT rows / 2 with CFG

  @property
  def edits(self) -> int:
    """Edits of one source that fit (0 when not even the source and one edit do)."""
    return max(0, self.prompts - 1)


def attention_for(platform: str, dtype: str) -> str:
  """The attention a platform runs by default (models.attention_kernels.resolve's `auto`)."""
  if dtype == "float32":
    return "xla"
  return "splash" if platform == "tpu" else "cudnn"


def entry(accelerator: Accelerator, window: Window, dtype: str) -> Entry:
  attention = attention_for(accelerator.platform, dtype)
  config = named_config(window.config).with_dtype(dtype).with_attention(attention)
  params = memory.config_params_bytes(config)
  row = memory.dit_row_bytes(config, window.frames)
  available = accelerator.memory_gib * GIB * USABLE_FRACTION - params - memory.dit_fixed_bytes(config)
  rows = max(0, int(available // row))
  return Entry(accelerator, window, dtype, attention, params / GIB, row / 2**20, rows,
               rows // rows_lib.branches(window.cfg))


def table() -> list[Entry]:
  return [entry(a, w, dtype) for w in WINDOWS for dtype in ("float32", "bfloat16") for a in ACCELERATORS]


def markdown(entries: list[Entry]) -> str:
  lines = [(f"Usable memory: {USABLE_FRACTION:.0%} of the device's. Prompt rows: a source or an edit each "
            "(SAO 1.0 runs CFG: 2 DiT rows a prompt; SAO Small at guidance 1: 1)."), "",
           ("| window | dtype | accelerator | memory GiB | attention | parameters GiB | MiB a DiT row | DiT rows | "
            "prompt rows | edits of one source |"), "|---|---|---|---|---|---|---|---|---|---|"]
  for e in entries:
    lines.append(f"| {e.window.label} | {e.dtype} | {e.accelerator.name} | {e.accelerator.memory_gib:.0f} | "
                 f"{e.attention} | {e.params_gib:.2f} | {e.row_mib:.0f} | {e.dit_rows} | {e.prompts} | {e.edits} |")
  return "\n".join(lines)


def to_json(entries: list[Entry]) -> dict:
  return {"usable_fraction": USABLE_FRACTION, "estimate": "analytic (pipeline.memory.dit_row_bytes)",
          "entries": [{"window": e.window.label, "dtype": e.dtype, "accelerator": e.accelerator.name,
                       "memory_gib": round(e.accelerator.memory_gib, 1), "attention": e.attention,
                       "params_gib": round(e.params_gib, 3), "dit_row_mib": round(e.row_mib, 1),
                       "dit_rows": e.dit_rows, "prompt_rows": e.prompts, "edits": e.edits} for e in entries]}


@dataclasses.dataclass(frozen=True)
class CompiledCheck:
  """XLA's statistics of the edit step compiled for this machine's CPU, against the estimate."""

  config: str
  dtype: str
  dit_rows: int
  frames: int
  compiled_temp_mib: float  # XLA's temporaries (the working memory)
  estimate_mib: float  # dit_fixed_bytes + dit_rows x dit_row_bytes

  @property
  def ratio(self) -> float:
    return self.estimate_mib / self.compiled_temp_mib


def compiled_check(config_name: str = "sao-small", dtype: str = "float32", frames: int | None = None) -> CompiledCheck:
  """Compiles the edit step (programs_lib, attention xla) at real size on the CPU: abstract
  arguments, so no weights; a second or two for SAO Small."""
  config: ModelConfig = named_config(config_name).with_dtype(dtype).with_attention("xla")
  frames = frames or config.dit.sample_size
  name = programs_lib.ProgramName({v: k for k, v in programs_lib.MODELS.items()}[config_name], "edit_step",
                                  {v: k for k, v in programs_lib.DTYPES.items()}[dtype], "xla")
  program = programs_lib.build(name)
  compiled = program.function.trace(*program.args, **program.kwargs).lower().compile()
  stats = compiled.memory_analysis()
  rows = int(np.shape(program.args[1].cond.cross_tokens)[0])  # the RowBlock's DiT rows
  return CompiledCheck(config_name, dtype, rows, frames, stats.temp_size_in_bytes / 2**20,
                       (memory.dit_fixed_bytes(config) + rows * memory.dit_row_bytes(config, frames)) / 2**20)


