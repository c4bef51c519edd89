"""A batch run's account of itself: each job's status (summary.json, rewritten after every job so
that a crash leaves an up-to-date one), the listening page over every job (index.html), and, on
several hosts, each process's summary merged by process 0.

Several hosts meet through the (shared) output folder, not a collective: the processes finish at
different times, hours apart on a long manifest, far beyond a collective's timeout."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import jax

from musickv_jax import files
from musickv_jax.errors import SettingsError
from musickv_jax.writers import listening

SUMMARY = "summary.json"
MERGE_TIMEOUT_S = 7 * 24 * 3600  # how long the processes of a multi-host run wait for each other


@dataclasses.dataclass
class JobStatus:
  id: str | None
  line: int  # where the job was asked (its manifest line)
  status: str  # ok | failed
  error: str | None = None
  seconds: float = 0.0

  def to_json(self) -> dict:
    return {"id": self.id, "line": self.line, "status": self.status, "error": self.error,
            "seconds": round(self.seconds, 2)}


def summary_path(out_dir: Path, process: int, processes: int) -> Path:
  return out_dir / (SUMMARY if processes == 1 else f"summary.process-{process}.json")


def write_summary(path: Path, statuses: list[JobStatus], devices: int, processes: int, started: float,
                  final: bool = False) -> None:
  data = {"jobs": [s.to_json() for s in statuses], "devices": devices, "processes": processes,
          "ok": sum(s.status == "ok" for s in statuses), "failed": sum(s.status == "failed" for s in statuses),
          "seconds": round(time.time() - started, 2), "final": final}
  files.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def write_page(out_dir: Path, statuses: list[JobStatus]) -> None:
  """index.html: a section per job (its players and metrics, or its error)."""
  sections = []
  for status in statuses:
    record_path = out_dir / str(status.id) / "edit.json"
    if status.status == "ok" and record_path.is_file():
      sections.append(listening.sections_from_record(json.loads(record_path.read_text()), prefix=f"{status.id}/"))
    else:
      sections.append(listening.JobSection(title=str(status.id or f"manifest line {status.line}"), clips=[],
                                           error=status.error or "failed"))
  ok = sum(s.status == "ok" for s in statuses)
  files.write_atomic(out_dir / "index.html", lambda tmp: listening.write_page(
      tmp, "musickv-jax batch", sections, summary=f"{ok} of {len(statuses)} jobs succeeded"))


# ----------------------------------------------------------------------------- several hosts


@dataclasses.dataclass(frozen=True)
class Processes:
  """How several hosts share a run: coordinator_address (host:port of process 0), num_processes and
  process_id, all given or none (a TPU pod finds its peers itself)."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def start_processes(asked: Processes) -> tuple[int, int]:
  """jax.distributed for several hosts: (this process's index, the process count). A process that
  finishes early waits for the others when it shuts down (a long manifest: all the time it needs)."""
  given = [asked.coordinator_address is not None, asked.num_processes is not None, asked.process_id is not None]
  if any(given) and not all(given):
    raise SettingsError("several hosts need all of {field}, {num_processes} and {process_id}",
                        field="coordinator_address", mentions=("num_processes", "process_id"))
  if all(given):
    if not 0 <= asked.process_id < asked.num_processes:
      raise SettingsError(f"{{field}} must be between 0 and {asked.num_processes - 1}, got {asked.process_id}",
                          field="process_id")
    jax.distributed.initialize(coordinator_address=asked.coordinator_address, num_processes=asked.num_processes,
                               process_id=asked.process_id, shutdown_timeout_seconds=MERGE_TIMEOUT_S)
  elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a multi-host TPU slice: JAX finds its peers
    jax.distributed.initialize(shutdown_timeout_seconds=MERGE_TIMEOUT_S)
  return jax.process_index(), jax.process_count()


def wait_for_summaries(out_dir: Path, processes: int) -> None:
  """Process 0 waits until every other process has written its final summary."""
  deadline = time.time() + MERGE_TIMEOUT_S
  pending = set(range(1, processes))
  while pending and time.time() < deadline:
    for other in sorted(pending):
      path = out_dir / f"summary.process-{other}.json"
      if path.is_file() and json.loads(path.read_text()).get("final"):
        pending.discard(other)
    if pending:
      time.sleep(1.0)
  if pending:
    raise SettingsError(f"processes {sorted(pending)} did not finish; their summaries are missing from {out_dir}")


def merge_summaries(out_dir: Path, statuses: list[JobStatus], processes: int) -> list[JobStatus]:
  """Process 0: every process's statuses, in manifest order (the other processes' files removed)."""
  if processes > 1:
    for other in range(1, processes):
      path = out_dir / f"summary.process-{other}.json"
      for entry in json.loads(path.read_text())["jobs"]:
        statuses.append(JobStatus(entry["id"], entry["line"], entry["status"], entry["error"], entry["seconds"]))
      path.unlink()
    (out_dir / "summary.process-0.json").unlink(missing_ok=True)
  return sorted(statuses, key=lambda s: s.line)
