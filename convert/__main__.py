"""Convert a Stable Audio Open checkpoint to musickv-jax.

  python -m convert --source PATH_OR_HUB_ID --output DIR [--t5 DIR] [--model_config FILE]
                    [--dtype bfloat16] [--hf_token TOKEN] [--overwrite]

--source: a diffusers folder (model_index.json, transformer/, vae/, ...), a
stable-audio-tools model.safetensors / model.ckpt (model_config.json beside it, T5 from
--t5), or a hub repo id such as stabilityai/stable-audio-open-1.0 (needs --hf_token).
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "Checkpoint to convert: diffusers folder, stable-audio-tools file, or hub id.")
flags.DEFINE_string("output", None, "Directory to write the converted checkpoint to.")
flags.DEFINE_string("t5", None, "T5 folder (Hugging Face layout) for a stable-audio-tools checkpoint.")
flags.DEFINE_string("model_config", None, "model_config.json of a stable-audio-tools checkpoint "
                    "(default: the one beside the weights file).")
flags.DEFINE_string("hf_token", None, "Hugging Face token for gated hub repos.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype to store the parameters in.")
flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
flags.DEFINE_bool("allow_unexpected", False, "Convert even if the source holds tensors the model does not use "
                  "(they are listed and skipped).")


def main(argv):
  del argv
  import logging
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("orbax").setLevel(logging.WARNING)
  from convert.pipeline import convert_checkpoint
  from convert.tensors import ConversionError

  if not FLAGS.source or not FLAGS.output:
    print("error: --source and --output are required", file=sys.stderr)
    return 2
  try:
    convert_checkpoint(FLAGS.source, FLAGS.output, t5_dir=FLAGS.t5, model_config=FLAGS.model_config,
                       hf_token=FLAGS.hf_token, dtype=FLAGS.dtype, overwrite=FLAGS.overwrite,
                       allow_unexpected=FLAGS.allow_unexpected)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
