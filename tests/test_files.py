"""Writing files: a failed, interrupted or killed write never leaves a half-written file under its
final name, never loses an existing file, and what a killed process left is cleaned up later."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from musickv_jax import files
from musickv_jax.audio import save_wav
from musickv_jax.writers.sets import OutputSet

pytestmark = pytest.mark.fast


def dead_pid() -> int:
  """The PID of a process that has exited."""
  proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  return int(proc.stdout)


def stale_name(final_name: str, pid: int) -> str:
  return files.temporary_path(files.Path(final_name)).name.replace(f"-{os.getpid()}-", f"-{pid}-")


def test_failed_atomic_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
  target = tmp_path / "song.wav"
  target.write_bytes(b"the user's file")

  def write_then_fail(tmp):
    tmp.write_bytes(b"half")
    raise OSError(28, "No space left on device")

  with pytest.raises(OSError, match="No space left"):
    files.write_atomic(target, write_then_fail)
  assert target.read_bytes() == b"the user's file"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]

  def write_then_interrupt(tmp):
    tmp.write_bytes(b"half")
    raise KeyboardInterrupt  # Ctrl-C in the middle of a write

  with pytest.raises(KeyboardInterrupt):
    files.write_atomic(tmp_path / "new.wav", write_then_interrupt)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_wav_writer_failure_leaves_no_temporary(tmp_path):
  with pytest.raises(Exception):
    save_wav(tmp_path / "x.wav", np.zeros((2, 10), np.float32), sample_rate=-5)  # libsndfile refuses the rate
  assert list(tmp_path.iterdir()) == []


def test_output_set_failing_after_staging_leaves_outputs_as_they_were(tmp_path):
  (tmp_path / "source.wav").write_bytes(b"earlier run")
  with pytest.raises(RuntimeError):
    with OutputSet(tmp_path) as outputs:
      outputs.path("source.wav").write_bytes(b"new")
      outputs.path("edit_1.wav").write_bytes(b"new")
      raise RuntimeError("the spectrogram could not be drawn")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["source.wav"]
  assert (tmp_path / "source.wav").read_bytes() == b"earlier run"


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
  pid = dead_pid()
  stale_file = tmp_path / stale_name("source.wav", pid)
  stale_file.write_bytes(b"half-written by a killed run")
  stale_dir = tmp_path / stale_name("ckpt", pid)
  stale_dir.mkdir()
  (stale_dir / "params").write_bytes(b"x")
  mine = files.temporary_path(tmp_path / "edit.wav")  # this process is alive: left alone
  mine.write_bytes(b"in progress")
  unrelated = tmp_path / ".hidden-user-file"
  unrelated.write_bytes(b"keep")
  assert files.stale_temporaries(tmp_path) == sorted([stale_file, stale_dir])
  with OutputSet(tmp_path, announce=False) as outputs:
    outputs.commit()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, unrelated.name])


def test_another_hosts_temporaries_are_left_alone(tmp_path):
  """A folder shared between hosts: a temporary written by another host names a PID of that host,
  which says nothing about the processes here (dead here, it may be alive there): never stale."""
  pid = dead_pid()
  other_host = "another_host_7"
  assert other_host != files._HOST
  theirs_file = tmp_path / stale_name("source.wav", pid).replace(f"-{files._HOST}-", f"-{other_host}-")
  theirs_file.write_bytes(b"being written on another host")
  theirs_dir = tmp_path / stale_name("job", pid).replace(f"-{files._HOST}-", f"-{other_host}-")
  theirs_dir.mkdir()
  (theirs_dir / "edit.wav").write_bytes(b"x")
  ours = tmp_path / stale_name("edit.wav", pid)  # this host, dead PID: stale
  ours.write_bytes(b"half-written by a killed run")
  assert files._TEMPORARY.match(theirs_file.name)["host"] == other_host  # well-formed, only the host differs
  assert files.stale_temporaries(tmp_path) == [ours]
  assert files.stale_temporaries(tmp_path, "source.wav") == []
  assert files.remove_stale_temporaries(tmp_path) == [ours]
  with OutputSet(tmp_path, announce=False) as outputs:  # what every command does before writing
    outputs.commit()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([theirs_file.name, theirs_dir.name])
  assert (theirs_dir / "edit.wav").read_bytes() == b"x"


def test_check_writable(tmp_path):
  assert files.check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
  assert not (tmp_path / "new").exists()  # the check creates nothing
  with pytest.raises(OSError):
    files.check_writable("/proc/musickv-test/out")
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError):
    files.check_writable(tmp_path / "file" / "out")
