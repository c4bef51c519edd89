"""musickv-studio: MusicKV editing in the browser, on models loaded once and kept warm.

  musickv-studio --model DIR [--host 127.0.0.1] [--port 7860] [--auth USER:PASSWORD] [--output_path outputs/studio]

Opens a page (http://127.0.0.1:7860) to edit an uploaded recording or a generated source: prompts,
preset, vital layers, injection schedule, steps, guidance, seed and duration (defaults: the
model's own), how a recording is edited (inversion, flowedit, sdedit at a level) and which of its
spans (regions), players for the input, the source and each edit, the spectrograms,
musickv-evaluate's metrics, the files (WAVs, edit.json) and a history of the session's edits. A
compare tab runs several methods on one recording side by side (musickv-compare). The edit and the
comparison are also the API endpoints /edit and /compare (gradio_client). Concurrent edits of one shape run as rows of one sampler call; the
inversion of a recording is kept for its next edit. --model can be repeated (a choice in the page).
Each edit's files go to a folder of their own under --output_path, which is also the only folder the
server serves files from (its uploads and temporaries in --output_path/.gradio, removed when it
stops). Ctrl-C stops it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from absl import flags

from musickv_jax.cli import options
from musickv_jax.cli.outputs import check_output_dir
from musickv_jax.cli.runner import Command, Flags, UsageError, entry_point
from musickv_jax.loading import load_model
from musickv_jax.pipeline import limits

TEMP_FOLDER = ".gradio"  # under the output folder: uploads and the files gradio serves


def define(fv: Flags) -> None:
  flags.DEFINE_multi_string("model", [], "Converted checkpoint dir (or a checkpoint / hub id converted once); repeat "
                            "for several models to choose from.", flag_values=fv)
  flags.DEFINE_string("hf_token", None, "Hugging Face token, for --model given as a gated hub id.", flag_values=fv)
  flags.DEFINE_string("t5", None, "T5 folder, when --model is an unconverted stable-audio-tools file.", flag_values=fv)
  flags.DEFINE_string("dtype", "float32", "float32 or bfloat16 for the DiT and VAE.", flag_values=fv)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).", flag_values=fv)
  flags.DEFINE_integer("port", 7860, "Port to listen on.", flag_values=fv)
  flags.DEFINE_string("auth", None, "USER:PASSWORD: ask for this login.", flag_values=fv)
  flags.DEFINE_string("output_path", "outputs/studio", "Folder for the edits' files (one folder per edit).",
                      flag_values=fv)
  flags.DEFINE_string("max_upload", "200MB", "Largest upload accepted (gradio's size syntax: 200MB, 1GB).",
                      flag_values=fv)
  flags.DEFINE_float("gather_s", 0.2, "How long the worker waits for more requests to batch with the first.",
                     flag_values=fv)
  flags.DEFINE_integer("rows_per_batch", 8, "Prompt rows of one sampler call (requests of one shape share it).",
                       flag_values=fv)


def parse_auth(text: str | None) -> tuple[str, str] | None:
  if text is None:
    return None
  user, colon, password = text.partition(":")
  if not colon or not user or not password:
    raise UsageError("--auth must be USER:PASSWORD, both non-empty")
  return user, password


def body(fv: Flags) -> int:
  if not fv.model:
    raise UsageError("--model is required: a converted checkpoint directory (repeat --model for several)")
  auth = parse_auth(fv.auth)
  if not 0 < fv.port < 65536:
    raise UsageError(f"--port must be between 1 and 65535, got {fv.port}")
  if fv.gather_s < 0 or fv.rows_per_batch < 1:
    raise UsageError("--gather_s must be >= 0 and --rows_per_batch >= 1")
  limits.check_at_most(fv.rows_per_batch, limits.MAX_ROWS, "rows_per_batch", "rows")
  out_dir = check_output_dir(fv.output_path)
  temp = out_dir / TEMP_FOLDER
  os.environ["GRADIO_TEMP_DIR"] = str(temp)  # before gradio is imported: uploads and served files stay inside
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  try:
    from musickv_jax.cli.studio import app  # gradio: the optional extra
  except ImportError as e:
    raise UsageError(f"musickv-studio needs gradio ({e.name} is missing): pip install 'musickv-jax[studio]'") from None
  from musickv_jax.studio.service import Studio

  models = {}
  for source in fv.model:
    print(f"loading {source}", flush=True)
    model = load_model(source, hf_token=fv.hf_token, t5=fv.t5, dtype=fv.dtype)
    name = Path(source).name or source  # the folder's name; the whole path if two share a name
    name = source if name in models else name
    models[name] = (source, model)
  out_dir.mkdir(parents=True, exist_ok=True)
  studio = Studio(models, out_dir, gather_s=fv.gather_s, rows_per_batch=fv.rows_per_batch,
                  command_of=options.edit_command_line, compare_command_of=options.compare_command_line)
  page = app.build(studio)
  page.queue(default_concurrency_limit=8)
  try:
    page.launch(server_name=fv.host, server_port=fv.port, auth=auth, max_file_size=fv.max_upload,
                allowed_paths=[], blocked_paths=[], prevent_thread_lock=True, quiet=True, show_error=False,
                footer_links=["api"], ssr_mode=False)
    print(f"musickv-studio serving {', '.join(models)} on http://{fv.host}:{fv.port} (outputs in {out_dir}); "
          "Ctrl-C stops it", flush=True)
    while True:  # until Ctrl-C or SIGTERM (the runner prints the one line)
      time.sleep(0.5)
  finally:
    page.close(verbose=False)
    studio.close()
    shutil.rmtree(temp, ignore_errors=True)


COMMAND = Command(name="musickv-studio", doc=__doc__, define=define, body=body, multi_value_flags=(),
                  flag_of_field=options.FLAG_OF_FIELD, interrupted="musickv-studio stopped",
                  terminated="musickv-studio stopped (terminated)")
main = entry_point(COMMAND)
