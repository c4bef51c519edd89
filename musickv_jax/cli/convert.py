"""musickv-convert: convert a Stable Audio Open checkpoint to musickv-jax (also `python -m convert`).

  musickv-convert --source PATH_OR_HUB_ID --output DIR [--t5 DIR] [--model_config FILE]
                  [--dtype bfloat16] [--hf_token TOKEN] [--overwrite]

--source: a diffusers folder (model_index.json, transformer/, vae/, ...), a stable-audio-tools
model.safetensors / model.ckpt (model_config.json beside it, T5 from --t5), or a hub repo id
such as stabilityai/stable-audio-open-1.0 (needs --hf_token). --overwrite replaces only a
converted checkpoint or an empty folder.
"""

from __future__ import annotations

from absl import flags

from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.convert.pipeline import convert_checkpoint

FLAG_OF_FIELD = {"t5_dir": "t5"}


def define(fv: Flags) -> None:
  flags.DEFINE_string("source", None, "Checkpoint to convert: diffusers folder, stable-audio-tools file, or hub id.",
                      flag_values=fv)
  flags.DEFINE_string("output", None, "Directory to write the converted checkpoint to.", flag_values=fv)
  flags.DEFINE_string("t5", None, "T5 folder (Hugging Face layout) for a stable-audio-tools checkpoint.",
                      flag_values=fv)
  flags.DEFINE_string("model_config", None, "model_config.json of a stable-audio-tools checkpoint "
                      "(default: the one beside the weights file).", flag_values=fv)
  flags.DEFINE_string("hf_token", None, "Hugging Face token for gated hub repos.", flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype to store the parameters in.",
                    flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace --output if it is a converted checkpoint or an empty folder.",
                    flag_values=fv)
  flags.DEFINE_bool("allow_unexpected", False, "Convert even if the source holds tensors the model does not use "
                    "(they are listed and skipped).", flag_values=fv)


def body(fv: Flags) -> None:

  if not fv.source or not fv.output:
    raise UsageError("--source and --output are required")
  convert_checkpoint(fv.source, fv.output, t5_dir=fv.t5, model_config=fv.model_config, hf_token=fv.hf_token,
                     dtype=fv.dtype, overwrite=fv.overwrite, allow_unexpected=fv.allow_unexpected)


COMMAND = Command(name="musickv-convert", doc=__doc__, define=define, body=body, multi_value_flags=(),
                  flag_of_field=FLAG_OF_FIELD)
main = entry_point(COMMAND)
