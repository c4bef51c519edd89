"""What an edit writes, shared by musickv-edit (one job) and musickv-edit-batch (one folder per job):
source.wav (source_reconstruction.wav for a recording), edit_1.wav, ..., prompt_N.wav for plain
generations, input.wav for a recording, edit.json with every setting, spectrograms.png, and
index.html, the listening page."""

from __future__ import annotations

from musickv_jax.audio import save_wav
from musickv_jax.metrics import spectrogram
from musickv_jax.writers import listening
from musickv_jax.writers.sets import OutputSet, write_json


def output_stems(roles: list[str], real_audio: bool, first_prompt_number: int = 1) -> list[str]:
  """File stems for the rows of an edit: source (source_reconstruction for a recording),
  edit_1, edit_2, ..., and prompt_N for a plain generation of prompt N (1-based)."""
  stems, edits = [], 0
  for i, role in enumerate(roles):
    if role == "source":
      stems.append("source_reconstruction" if real_audio else "source")
    elif role == "edit":
      edits += 1
      stems.append(f"edit_{edits}")
    else:
      stems.append(f"prompt_{i + first_prompt_number}")
  return stems


def outputs_record(result, real_audio: bool) -> list[dict]:
  """edit.json's "outputs": file, role and prompt of every row, and for each edit how much of the
  source it kept (the listening page's metrics; None without a source row or at low sample rates)."""
  first_prompt = 1 if result.roles[0] == "source" else 2
  stems = output_stems(result.roles, real_audio, first_prompt)
  kept = None
  if result.roles[0] == "source":
    edits = [i for i, role in enumerate(result.roles) if role == "edit"]
    kept = listening.structure_kept(result.audio[0], [result.audio[i] for i in edits], result.sample_rate)
    kept = dict(zip(edits, kept)) if kept is not None else None
  return [{"file": f"{stem}.wav", "role": role, "prompt": prompt, "kept": (kept or {}).get(i)}
          for i, (stem, role, prompt) in enumerate(zip(stems, result.roles, result.prompts))]


def write_edit_outputs(outputs: OutputSet, result, record: dict, *, recording=None, input_label: str = "",
                       wav_subtype: str = "FLOAT") -> None:
  """Stages every file of one edit in `outputs` (the caller commits). `record` is edit.json, with
  "outputs" from outputs_record."""

  for output, audio in zip(record["outputs"], result.audio):
    save_wav(outputs.path(output["file"]), audio, result.sample_rate, wav_subtype)
  panels = [(recording.audio, f"input: {input_label}")] if recording is not None else []
  panels += [(result.audio[i], f"{o['file'][:-4]}: {o['prompt']}") for i, o in enumerate(record["outputs"])
             if o["role"] in ("source", "edit")]
  if recording is not None:
    save_wav(outputs.path("input.wav"), recording.audio, result.sample_rate, wav_subtype)
  write_json(outputs.path("edit.json"), record)
  spectrogram.save_comparison(outputs.path("spectrograms.png"), [p[0] for p in panels], [p[1] for p in panels],
                              result.sample_rate)
  section = listening.sections_from_record(record)
  listening.write_page(outputs.path("index.html"), f"musickv-jax edit: {section.title}", [section],
                       summary=record.get("command", ""))
