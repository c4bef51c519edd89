"""Starting and stopping a real musickv-studio process for the studio tests."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class Server:
  process: subprocess.Popen
  url: str
  output: Path
  log: Path

  def stop(self) -> tuple[int, str]:
    """Ctrl-C, as a person stops it: (exit status, what it printed on stderr)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)
      try:
        self.process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode, self.log.read_text()


def start(model: Path, output: Path, *extra: str, timeout: float = 240) -> Server:
  port = free_port()
  log = output.parent / f"{output.name}-server.log"
  output.parent.mkdir(parents=True, exist_ok=True)
  env = {**os.environ, "PYTHONPATH": str(REPO), "MUSICKV_COMPILATION_CACHE": "0", "GRADIO_ANALYTICS_ENABLED": "False"}
  with open(log, "w") as f:
    process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "studio.py"), "--model", str(model),
                                "--port", str(port), "--output_path", str(output), *extra],
                               cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  deadline = time.time() + timeout
  while time.time() < deadline:
    if process.poll() is not None:
      raise RuntimeError(f"musickv-studio exited with {process.returncode}: {log.read_text()[-3000:]}")
    try:
      urllib.request.urlopen(url, timeout=2)
      return Server(process, url, output, log)
    except OSError as e:
      if getattr(e, "code", None) is not None:  # an HTTP answer (e.g. 401 behind --auth): it is serving
        return Server(process, url, output, log)
      time.sleep(0.5)
  process.kill()
  raise RuntimeError(f"musickv-studio did not start within {timeout} s: {log.read_text()[-3000:]}")
