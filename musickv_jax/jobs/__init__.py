"""An edit job from request to result, for every caller (musickv-edit, musickv-edit-batch, the
studio):

  request.py    EditRequest: what an edit asks, in the library's terms; resolve() -> its settings
  prepare.py    prepare(): every check, the recording read and inverted (or a cached inversion), the plan
  runner.py     plan_run() + run(): jobs alone or packed into device batches, chunked with progress
                and cancel, a failure confined to its group
  batching.py   packing jobs into batches of rows and sampling them on one device or a data mesh
  results.py    a finished job's edit.json and files
  resume.py     whether a finished job may be reused (its recorded request vs what is asked now)
  inversions.py the inversions of recordings, cached for their next edit
  manifest.py   musickv-edit-batch's manifest; summary.py its summary, page and several hosts
"""

from musickv_jax.jobs.batching import EditJob
from musickv_jax.jobs.inversions import InversionCache
from musickv_jax.jobs.prepare import PreparedJob, prepare, read_recording
from musickv_jax.jobs.request import (
  DEFAULTS,
  EditRequest,
  RecordingRequest,
  ResolvedEdit,
  ScheduleRequest,
  check_combinations,
  resolve,
)
from musickv_jax.jobs.results import edit_record, stage_job, write_job_folder
from musickv_jax.jobs.runner import Cancelled, GroupOutcome, Progress, RunPlan, plan_run, run

__all__ = [
    "DEFAULTS", "Cancelled", "EditJob", "EditRequest", "GroupOutcome", "InversionCache", "PreparedJob", "Progress",
    "RecordingRequest", "ResolvedEdit", "RunPlan", "ScheduleRequest", "check_combinations", "edit_record", "plan_run",
    "prepare", "read_recording", "resolve", "run", "stage_job", "write_job_folder",
]
