"""musickv-studio's page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium; nothing is downloaded) through a whole edit of an uploaded WAV on the tiny
model, the players' audio lengths, the metrics table, a text file renamed .wav refused in one line,
and a screenshot (docs/studio.png). `make test-browser`."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.browser

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
  pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
              allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (requirements-test.txt)")
pytest.importorskip("gradio", reason="musickv-studio needs the studio extra (gradio)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests import studio_server  # noqa: E402

# the screenshot goes to the test's own folder; MUSICKV_SCREENSHOT=docs/studio.png (make test-browser)
# refreshes the README's picture
SCREENSHOT_ENV = "MUSICKV_SCREENSHOT"
SECONDS = 2.5


@pytest.fixture(scope="module")
def server(tiny44k, tmp_path_factory):
  s = studio_server.start(tiny44k.path, tmp_path_factory.mktemp("studio-browser") / "out")
  yield s
  s.stop()


@pytest.fixture(scope="module")
def browser():
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,2000",
              "--autoplay-policy=no-user-gesture-required"):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
  driver.set_page_load_timeout(120)
  driver.set_script_timeout(60)
  yield driver
  driver.quit()


def wait(driver, condition, timeout=300, what=""):
  return WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: condition(d), message=what)


def type_into(driver, selector, text):
  field = driver.find_element(By.CSS_SELECTOR, selector)
  field.clear()
  field.send_keys(text)


def text_of(driver, elem_id) -> str:
  return driver.find_element(By.ID, elem_id).text


def audio_seconds(driver, elem_id) -> float | None:
  """The length of the audio a player holds, decoded by the browser itself (the file behind the
  player's download link, through the Web Audio API); None while the player is empty."""
  return driver.execute_async_script(
      "const done = arguments[arguments.length - 1];"
      f"const link = document.querySelector('#{elem_id} a.download-link');"
      "if (!link) { done(null); return; }"
      "fetch(link.href).then(r => r.arrayBuffer())"
      ".then(b => new OfflineAudioContext(2, 1, 44100).decodeAudioData(b))"
      ".then(audio => done(audio.duration)).catch(e => done(null));")


def test_a_whole_edit_of_an_uploaded_wav_in_chromium(server, browser, tmp_path):
  wav = tmp_path / "guitar.wav"
  t = np.arange(int(SECONDS * 44100)) / 44100
  sf.write(wav, np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2, axis=1), 44100)
  start = time.perf_counter()
  browser.get(server.url)
  wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#source_prompt textarea"), 120, "the page")
  type_into(browser, "#source_prompt textarea", "clean guitar")
  type_into(browser, "#edit_prompt textarea", "classical piano")
  type_into(browser, "#steps input", "4")
  browser.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(str(wav))
  wait(browser, lambda d: "44100 Hz" in text_of(d, "recording_info"), 120, "the upload's check")
  browser.find_element(By.ID, "edit_button").click()
  wait(browser, lambda d: "done in" in text_of(d, "status") or "error" in text_of(d, "status"), 600, "the edit")
  assert "done in" in text_of(browser, "status"), text_of(browser, "status")
  for player in ("input_player", "source_player", "edit_player_0"):
    seconds = wait(browser, lambda d, p=player: audio_seconds(d, p), 60, f"audio in {player}")
    assert abs(seconds - SECONDS) < 0.05, (player, seconds)
  table = text_of(browser, "metrics")
  assert "source_reconstruction" in table and "edit_1" in table and "f0_chroma_accuracy" in table, table
  assert "guitar" in text_of(browser, "history")
  screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "studio.png")
  browser.save_screenshot(str(screenshot))
  assert screenshot.read_bytes()[:4] == b"\x89PNG"
  print(f"\nbrowser: a whole edit in {time.perf_counter() - start:.1f} s; screenshot {screenshot}")

  # a text file renamed .wav: refused in one line, in the page, and the server serves on
  fake = tmp_path / "notes.wav"
  fake.write_text("these are notes, not audio\n")
  browser.get(server.url)
  wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"), 120, "the page again")
  browser.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(str(fake))
  wait(browser, lambda d: "error" in text_of(d, "recording_info"), 120, "the upload's refusal")
  message = text_of(browser, "recording_info")
  assert "notes.wav: cannot read it as audio" in message and "\n" not in message.strip(), message
  type_into(browser, "#source_prompt textarea", "clean guitar")
  type_into(browser, "#edit_prompt textarea", "classical piano")
  browser.find_element(By.ID, "edit_button").click()
  wait(browser, lambda d: "error" in text_of(d, "status"), 120, "the edit's refusal")
  assert "notes.wav: cannot read it as audio" in text_of(browser, "status")
