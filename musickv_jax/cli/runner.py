"""Running a command line: flags in, one-line errors out, and nothing left behind on failure.

Each command is a `Command`: its flags (on a FlagValues of its own, so commands can run side by
side in one process, e.g. in tests), its body, and how the library's field names map to its
flags. `run(command, argv)` returns the exit status:
  0    done
  1    the library refused the request or a file could not be used (one `error:` line)
  2    bad command-line usage (one `error:` line)
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM): one line; outputs are written as a set at
       the very end, so nothing was written
Flag syntax, as users of the original MusicKV command line type it: `--prompts A B C` (several
values after one flag; `--prompts=A` gives one), integer lists with commas (`--vital_layers=20,3,4`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging as std_logging
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import jax
from absl import flags
from absl import logging as absl_logging

from musickv_jax import interrupts
from musickv_jax.errors import MusicKVError
from musickv_jax.interrupts import Terminated, raise_if_interrupted
from musickv_jax.loading import default_cache_dir

Flags = flags.FlagValues
_INVOCATION: contextvars.ContextVar[list[str]] = contextvars.ContextVar("invocation", default=[])


def invocation() -> list[str]:
  """The command and arguments being run (for provenance records)."""
  return list(_INVOCATION.get())


def command_line() -> str:
  """The command line being run, quoted as a shell would take it back."""
  return " ".join(shlex.quote(a) for a in invocation())


class UsageError(Exception):
  """Bad command-line input (flag syntax, combinations): one line, exit status 2."""


class Refused(Exception):
  """A well-formed request the command will not carry out as asked (e.g. --resume over results of
  other settings): one line, exit status 1, like a refusal of the library's."""


def _on_signal(signum, frame):
  # remembered too (musickv_jax.interrupts): Python may swallow the exception raised here
  interrupts.remember(signum)
  raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def _unraisable(info) -> None:
  """Our own signal, swallowed where Python cannot raise (a gc callback): remembered in
  musickv_jax.interrupts and acted on later, so there is nothing to print."""
  if isinstance(info.exc_value, (KeyboardInterrupt, Terminated)):
    return
  sys.__unraisablehook__(info)


@dataclasses.dataclass(frozen=True)
class Command:
  name: str  # as typed: musickv-edit
  doc: str  # usage text for --help
  define: Callable[[Flags], None]  # defines the command's flags on the given FlagValues
  body: Callable[[Flags], int | None]  # does the work (an exit status, or None for 0); raises UsageError /
  # MusicKVError / OSError for the failures it knows
  multi_value_flags: tuple[str, ...] = ("prompts",)
  flag_of_field: Mapping[str, str] = dataclasses.field(default_factory=dict)  # library field -> flag
  interrupted: str = "interrupted; nothing was written"  # the one line of Ctrl-C (a server: that it stopped)
  terminated: str = "terminated; nothing was written"  # the one line of SIGTERM


def expand_multi_value_flags(argv: Sequence[str], names: Sequence[str], known: Flags) -> list[str]:
  """`--prompts A B` -> `--prompts=A --prompts=B`: values run until the next `--flag`."""
  out, current = [], None
  for arg in argv:
    if arg.startswith("--"):
      name = arg[2:].split("=", 1)[0]
      if current is not None and name not in known and name.removeprefix("no") not in known:
        raise UsageError(f"{arg!r} after --{current} is not a flag of this command; a value that starts with '--' "
                         f"must be given as --{current}=\"{arg}\"")
      current = name if (name in names and "=" not in arg) else None
      if current is None:
        out.append(arg)
      continue
    out.append(f"--{current}={arg}" if current is not None else arg)
  return out


class NumberListParser(flags.ListParser):
  """A comma-separated list of numbers (`--ramp=0,1`): parsed like DEFINE_list (the command says
  what a value that is not a number means), marked so that `check_numbers` checks its values."""


def define_number_list(name: str, default: list[str], help_text: str, fv: Flags) -> None:
  flags.DEFINE(NumberListParser(), name, default, help_text, flag_values=fv, serializer=flags.CsvListSerializer(","))


def _number(text) -> float | None:
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


def check_numbers(values: Flags) -> None:
  """Every number given to a flag of the command is finite (absl's float flags take 'nan' and
  'inf'): checked once, before any work, for every command."""
  for name in values:
    flag = values[name]
    if isinstance(flag.parser, NumberListParser):
      given, numbers = ",".join(flag.value or []), [_number(v) for v in flag.value or []]
    elif isinstance(flag.parser, flags.FloatParser):
      items = flag.value if isinstance(flag.value, list) else [flag.value]
      given, numbers = " ".join(f"{v:g}" for v in items if v is not None), items
    else:
      continue
    if any(v is not None and not math.isfinite(v) for v in numbers):
      raise UsageError(f"--{name} must be a finite number, got {given}")


def flag_namer(command: Command, values: Flags) -> Callable[[str], str]:
  """Library field name -> `--flag` when this command has that flag (else the field itself)."""
  def name_of(field: str) -> str:
    flag = command.flag_of_field.get(field, field)
    return f"--{flag}" if flag in values else field
  return name_of


def quiet_libraries() -> None:
  """Only warnings and errors from the libraries underneath (absl, Orbax, JAX's backend notes)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  if not flags.FLAGS.is_parsed():  # absl logging warns about unparsed global flags otherwise
    flags.FLAGS.mark_as_parsed()
  for name in ("absl", "orbax", "orbax.checkpoint", "jax._src.xla_bridge"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def run(command: Command, argv: Sequence[str] | None = None) -> int:
  """Parses argv (without the program name; default sys.argv[1:]) and runs the command."""
  argv = list(sys.argv[1:] if argv is None else argv)
  values = Flags()
  command.define(values)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
    print(f"{command.doc.strip()}\n\nflags:\n{values.get_help()}")
    return 0
  in_main_thread = threading.current_thread() is threading.main_thread()
  token = _INVOCATION.set([command.name, *argv])
  interrupts.clear()
  previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
  previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
  try:
    try:
      rest = values([command.name, *expand_multi_value_flags(argv, command.multi_value_flags, values)])
    except flags.Error as e:
      raise UsageError(str(e).splitlines()[0]) from None
    if len(rest) > 1:
      raise UsageError(f"unexpected arguments {rest[1:]} (values with spaces need quotes; lists take commas)")
    check_numbers(values)
    quiet_libraries()
    compilation_cache(default_compilation_cache())
    status = command.body(values) or 0
    raise_if_interrupted()  # a signal whose exception was swallowed on the way
    return status
  except UsageError as e:
    return _fail(str(e), 2)
  except Refused as e:
    return _fail(str(e), 1)
  except MusicKVError as e:
    return _fail(e.describe(flag_namer(command, values)), 1)
  except OSError as e:  # file-system trouble the checks could not foresee (disk full, permissions)
    where = f": {e.filename}" if e.filename else ""
    return _fail(f"{e.strerror or e}{where}", 1)
  except KeyboardInterrupt:
    return _fail(command.interrupted, 130)
  except Terminated:
    return _fail(command.terminated, 143)
  finally:
    _INVOCATION.reset(token)
    sys.unraisablehook = previous_hook
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def _fail(message: str, status: int) -> int:
  print(f"error: {message}" if status in (1, 2) else message, file=sys.stderr, flush=True)
  return status


def entry_point(command: Command) -> Callable[[], None]:
  """A console-script function for the command."""
  def main() -> None:
    status = run(command)
    if status in (130, 143):
      # Interrupted: the cleanups have run. Leave without waiting for device work still in flight
      # (and without the interpreter's teardown racing it, which can crash the process).
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)
    sys.exit(status)
  return main


def compilation_cache(directory: str | None) -> None:
  """Reuse compiled programs across runs (JAX's persistent compilation cache) in `directory`;
  None or "" or "0" turns it off."""
  if directory in (None, "", "0"):
    return
  jax.config.update("jax_compilation_cache_dir", directory)
  # programs that compile faster than this are not worth a file (MUSICKV_COMPILATION_CACHE_MIN_S)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ.get("MUSICKV_COMPILATION_CACHE_MIN_S", "0.2")))


def default_compilation_cache() -> str:
  return os.environ.get("MUSICKV_COMPILATION_CACHE", str(default_cache_dir() / "xla"))
