"""The listening page: one static HTML file (no server, no scripts, nothing from the internet) with,
per job, its prompts, a player for the source and each edit, the spectrogram comparison, and how
much of the source each edit kept (melody, form, rhythm). Links are relative, so the folder can be
copied anywhere and opened in a browser."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from musickv_jax.finite import require_finite
from musickv_jax.metrics import Analysis, compare_jit
from musickv_jax.metrics.features import MIN_SAMPLE_RATE

PAGE_METRICS = (("f0_chroma_accuracy", "melody (pitch)"), ("cqt1_pcc", "melody (CQT1-PCC)"),
                ("chroma_cosine", "harmony (chroma)"), ("form_ssm_correlation", "form"), ("onset_correlation", "rhythm"))
ANALYSIS_SEGMENT_S = 60.0  # longer clips are compared a minute at a time (see structure_kept)
MIN_ANALYSIS_RATE = MIN_SAMPLE_RATE  # below this the page shows no metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; border-top: 1px solid #ccc; padding-top: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.75em; text-align: left; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
audio { width: 22em; } img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
.failed { color: #b00; }
"""


@dataclasses.dataclass
class Clip:
  role: str  # input, source, edit, plain
  file: str  # relative to the page
  prompt: str
  kept: dict[str, float] | None = None  # structure metrics against the source (edits)


@dataclasses.dataclass
class JobSection:
  title: str
  clips: list[Clip]
  spectrogram: str | None = None  # relative path of the PNG
  note: str = ""
  error: str | None = None


def structure_kept(source: np.ndarray, edits: Sequence[np.ndarray], sample_rate: int) -> list[dict[str, float]] | None:
  """The page's metrics of each edit (channels, samples) against the source, or None below
  MIN_ANALYSIS_RATE. A clip longer than ANALYSIS_SEGMENT_S (a whole song) is compared in equal
  segments no longer than that, and the segments' values averaged: memory stays bounded."""
  if sample_rate < MIN_ANALYSIS_RATE or not len(edits):
    return None


  analysis = Analysis(sample_rate=sample_rate)
  mono = np.mean(source, axis=0)
  segments = max(1, math.ceil(len(mono) / (ANALYSIS_SEGMENT_S * sample_rate)))
  length = len(mono) // segments  # equal segments: one compiled comparison
  out = []
  for edit in edits:
    edit_mono = np.mean(edit, axis=0)
    values = [compare_jit(jnp.asarray(mono[i * length:(i + 1) * length]),
                          jnp.asarray(edit_mono[i * length:(i + 1) * length]), analysis) for i in range(segments)]
    out.append({name: float(np.mean([float(v[name]) for v in values])) for name, _ in PAGE_METRICS})
  require_finite(out, stage="metrics", what="scores of the edits against their source")
  return out


def _section(job: JobSection) -> str:
  parts = [f"<h2>{html.escape(job.title)}</h2>"]
  if job.error:
    parts.append(f'<p class="failed">failed: {html.escape(job.error)}</p>')
    return "\n".join(parts)
  if job.note:
    parts.append(f'<p class="note">{html.escape(job.note)}</p>')
  header = "".join(f"<th>{html.escape(label)}</th>" for _, label in PAGE_METRICS)
  rows = []
  for clip in job.clips:
    kept = "".join(f"<td>{clip.kept[name]:.3f}</td>" if clip.kept else "<td></td>" for name, _ in PAGE_METRICS)
    rows.append(f"<tr><td>{html.escape(clip.role)}</td><td>{html.escape(clip.prompt)}</td>"
                f'<td><audio controls preload="none" src="{html.escape(clip.file, quote=True)}"></audio></td>{kept}</tr>')
  parts.append(f"<table><tr><th>role</th><th>prompt</th><th>listen</th>{header}</tr>\n" + "\n".join(rows) + "</table>")
  if job.spectrogram:
    parts.append(f'<img src="{html.escape(job.spectrogram, quote=True)}" alt="spectrograms of {html.escape(job.title)}">')
  return "\n".join(parts)


def render(title: str, jobs: Sequence[JobSection], summary: str = "") -> str:
  legend = ("Similarity of each edit to its source: 1 is identical; melody is the correlation of the top "
            "constant-Q bin contours, form of the chroma self-similarity, rhythm of the onset envelopes.")
  body = "\n".join(_section(job) for job in jobs)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
          f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
          f'<p class="note">{html.escape(summary)}</p><p class="note">{html.escape(legend)}</p>\n{body}\n</body></html>\n')


def write_page(path: Path, title: str, jobs: Sequence[JobSection], summary: str = "") -> None:
  Path(path).write_text(render(title, jobs, summary))


def sections_from_record(record: dict, prefix: str = "") -> JobSection:
  """A job's section from its edit.json (links prefixed with the job's folder, for a batch page)."""
  clips = []
  if record.get("real_audio"):
    clips.append(Clip("input", prefix + "input.wav", "(the recording)"))
  for output in record["outputs"]:
    clips.append(Clip(output["role"], prefix + output["file"], output["prompt"], output.get("kept")))
  title = record.get("job_id") or record["settings"]["prompts"][0]
  return JobSection(title=title, clips=clips, spectrogram=prefix + "spectrograms.png")
