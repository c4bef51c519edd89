"""Writing files so that a failure, Ctrl-C or a kill never leaves a half-written file under its
final name, and so that what a killed process left behind is found and removed later.

Temporaries are hidden siblings of their final path, named after the process that writes them:
  .NAME.partial-HOST-PID-RANDOM
A temporary whose process is gone (same host, PID no longer alive) is stale: nobody will ever
finish it, so `remove_stale_temporaries` deletes it. Temporaries of live processes, and of other
hosts sharing the folder, are left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.partial-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def temporary_path(final: Path) -> Path:
  """A fresh hidden temporary beside `final`, owned by this process."""
  return final.parent / f".{final.name}.partial-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def final_name(path: Path) -> str:
  """The name of the file a temporary becomes (any other path: its own name)."""
  match = _TEMPORARY.match(Path(path).name)
  return match["name"] if match else Path(path).name


def pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by someone else
    return True
  return True


def stale_temporaries(directory: Path, name: str | None = None) -> list[Path]:
  """Temporaries in `directory` (of final name `name`, or any) left by dead processes of this host."""
  if not directory.is_dir():
    return []
  stale = []
  for entry in directory.iterdir():
    match = _TEMPORARY.match(entry.name)
    if match and (name is None or match["name"] == name) and match["host"] == _HOST \
       and not pid_alive(int(match["pid"])):
      stale.append(entry)
  return sorted(stale)


def remove_path(path: Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  else:
    path.unlink(missing_ok=True)


def remove_stale_temporaries(directory: Path, name: str | None = None) -> list[Path]:
  """Deletes what `stale_temporaries` finds; returns what it deleted."""
  stale = stale_temporaries(directory, name)
  for path in stale:
    remove_path(path)
  return stale


def replace_directory(staging: Path, final: Path) -> None:
  """Puts a completed `staging` directory in place of `final` (which may exist): the old one is
  moved aside first, so `final` is always either the old or the new complete directory."""
  if final.exists():
    retired = temporary_path(final)
    os.rename(final, retired)
    os.rename(staging, final)
    remove_path(retired)
  else:
    os.rename(staging, final)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
  """Calls write(tmp) for a temporary beside `path`, then renames it into place. On any failure
  (including KeyboardInterrupt) the temporary is removed and an existing `path` is untouched."""
  path = Path(path)
  tmp = temporary_path(path)
  try:
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path


def check_writable(path: str | Path) -> Path:
  """Raises OSError unless a file or folder could be created at `path`: its nearest existing
  ancestor must be a writable directory (checked with a real probe file, then removed)."""
  target = Path(path).expanduser().absolute()
  probe_dir = target if target.is_dir() else target.parent
  while not probe_dir.exists():
    probe_dir = probe_dir.parent
  if not probe_dir.is_dir():
    raise NotADirectoryError(20, "Not a directory", str(probe_dir))
  probe = temporary_path(probe_dir / "write-probe")
  probe.touch()
  probe.unlink()
  return target


def not_a_file(path: str | Path, label: str | None = None, kind: str = "file") -> str | None:
  """Why `path` cannot be read as a file, as an error message that starts with `label` (default:
  the path): "LABEL: file not found", "LABEL is a directory; give a file", ...; None when it is a
  file. `kind` names what is needed ("audio file")."""
  path = Path(path).expanduser()
  if path.is_file():
    return None
  label = str(path) if label is None else label
  if path.is_dir():
    return f"{label} is a directory; give {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
  if path.exists():
    return f"{label} is not a regular file; give {'an' if kind[0] in 'aeiou' else 'a'} {kind}"
  return f"{label}: {kind} not found"
