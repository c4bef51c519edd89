"""Audio input: reading, channel handling, band-limited resampling, segments, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from scipy.signal import firwin

from musickv_jax.audio import (RESAMPLE_KAISER_BETA, RESAMPLE_ZERO_CROSSINGS, AudioError, load_audio, pad_to_hop,
                               resample, save_wav)

pytestmark = pytest.mark.fast  # part of `make test-fast`

SR = 44100


def tone(freq, seconds, rate, amplitude=0.5, channels=1):
  t = np.arange(int(seconds * rate)) / rate
  x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
  return np.repeat(x[None], channels, axis=0)


def _filter_bound(source_rate: int, target_rate: int, frequency: float, amplitude: float) -> float:
  """What the resampler's own low-pass allows for a sine, from its design: the pass-band deviation
  at the sine's frequency, the largest stop-band leak (its images and aliases), and the float32
  output's rounding."""
  g = np.gcd(source_rate, target_rate)
  up, down = target_rate // g, source_rate // g
  taps = firwin(2 * RESAMPLE_ZERO_CROSSINGS * max(up, down) + 1, 1.0 / max(up, down),
                window=("kaiser", RESAMPLE_KAISER_BETA))
  n = 1 << 24
  response = np.abs(np.fft.rfft(taps, n))  # at frequencies k / n of the upsampled rate
  rate_up = source_rate * up
  passband = abs(response[int(round(frequency / rate_up * n))] / response[0] - 1.0)
  stop_from = int(np.ceil(1.2 * min(source_rate, target_rate) / 2 / rate_up * n))
  stopband = float(response[stop_from:].max() / response[0])
  return amplitude * (passband + 2 * stopband) + 4 * 2.0 ** -24


def test_resampling_keeps_frequency_and_amplitude():
  """A 1 kHz sine at 48 kHz resampled to 44.1 kHz stays within what the low-pass's design allows of
  the exact sine (amplitude 0.5), away from the edges; the spectral peak stays at 1 kHz."""
  x = tone(1000.0, 1.0, 48000)[0]
  y = resample(x, 48000, SR)
  assert len(y) == SR
  exact = tone(1000.0, 1.0, SR)[0]
  core = slice(3000, -3000)
  error = np.abs(y[core] - exact[core]).max()
  bound = _filter_bound(48000, SR, 1000.0, 0.5)
  print(f"48 kHz -> 44.1 kHz, 1 kHz sine: max error {error:.1e} (the filter's design allows {bound:.1e})")
  assert error < bound
  spectrum = np.abs(np.fft.rfft(y[core] * np.hanning(len(y[core]))))
  peak = np.fft.rfftfreq(len(y[core]), 1 / SR)[spectrum.argmax()]
  assert abs(peak - 1000.0) < 2.0
  assert abs(np.sqrt(2) * y[core].std() - 0.5) < 1e-3
  # Near the new Nyquist frequency the low-pass takes over: a 20 kHz tone is kept within 1e-3.
  high = resample(tone(20000.0, 1.0, 48000)[0], 48000, SR)
  assert np.abs(high[core] - tone(20000.0, 1.0, SR)[0][core]).max() < 1e-3


def test_wav_round_trip(tmp_path):
  audio = np.random.default_rng(0).uniform(-0.9, 0.9, size=(2, 1000)).astype(np.float32)
  save_wav(tmp_path / "f.wav", audio, SR, "FLOAT")
  back, sr = sf.read(tmp_path / "f.wav", dtype="float32", always_2d=True)
  assert sr == SR
  np.testing.assert_array_equal(back.T, audio)  # float32 WAV is lossless
  save_wav(tmp_path / "p.wav", audio, SR, "PCM_16")
  pcm, _ = sf.read(tmp_path / "p.wav", dtype="float32", always_2d=True)
  assert np.abs(pcm.T - audio).max() <= 1.0 / 32768 + 1e-9  # one LSB


def test_mono_22k_becomes_stereo_44k(tmp_path):
  sf.write(tmp_path / "mono.wav", tone(440.0, 2.0, 22050)[0], 22050)
  loaded = load_audio(tmp_path / "mono.wav", sample_rate=SR, max_seconds=47.55)
  assert loaded.audio.shape == (2, 2 * SR) and loaded.source_rate == 22050 and loaded.source_channels == 1
  np.testing.assert_array_equal(loaded.audio[0], loaded.audio[1])
  assert not loaded.warnings


def test_mp3_flac_ogg_are_read(tmp_path):
  stereo = tone(330.0, 1.5, SR, channels=2)
  for fmt, subtype in (("MP3", None), ("FLAC", None), ("OGG", "VORBIS")):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, stereo.T, SR, format=fmt, subtype=subtype)
    loaded = load_audio(path, sample_rate=SR, max_seconds=47.55)
    assert loaded.audio.shape[0] == 2 and abs(loaded.duration_s - 1.5) < 0.1, fmt


def test_segment_flags_cut_the_file(tmp_path):
  sf.write(tmp_path / "a.wav", tone(440.0, 5.0, SR, channels=2).T, SR)
  loaded = load_audio(tmp_path / "a.wav", sample_rate=SR, max_seconds=47.55, start_s=1.0, end_s=3.5)
  assert loaded.audio.shape == (2, int(2.5 * SR))


def test_bad_audio_gets_clear_errors(tmp_path):
  kw = dict(sample_rate=SR, max_seconds=4.0)
  with pytest.raises(AudioError, match="audio file not found"):
    load_audio(tmp_path / "none.wav", **kw)
  (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
  with pytest.raises(AudioError, match="cannot read it as audio"):
    load_audio(tmp_path / "garbage.wav", **kw)
  sf.write(tmp_path / "empty.wav", np.zeros((0, 2), np.float32), SR)
  with pytest.raises(AudioError, match="contains no audio samples"):
    load_audio(tmp_path / "empty.wav", **kw)
  sf.write(tmp_path / "long.wav", tone(440.0, 5.0, SR).T, SR)
  with pytest.raises(AudioError, match=r"5.00 s long but the model takes at most 4.00 s; pick a segment with "
                                       r"start_s / end_s"):
    load_audio(tmp_path / "long.wav", **kw)
  with pytest.raises(AudioError, match="outside the file"):
    load_audio(tmp_path / "long.wav", start_s=9.0, **kw)
  sf.write(tmp_path / "six.wav", np.tile(tone(440.0, 1.0, SR).T, (1, 6)), SR)
  with pytest.raises(AudioError, match="has 6 channels; the model takes 2. Set downmix to mix them down"):
    load_audio(tmp_path / "six.wav", **kw)
  assert load_audio(tmp_path / "six.wav", downmix=True, **kw).audio.shape == (2, SR)
  sf.write(tmp_path / "silent.wav", np.zeros((SR, 2), np.float32), SR)
  with pytest.raises(AudioError, match="is silent"):
    load_audio(tmp_path / "silent.wav", **kw)
  bad = tone(440.0, 1.0, SR, channels=2)
  bad[0, 100] = np.nan
  sf.write(tmp_path / "nan.wav", bad.T, SR, subtype="FLOAT")
  with pytest.raises(AudioError, match="NaN or infinite"):
    load_audio(tmp_path / "nan.wav", **kw)


def test_clipping_is_reported(tmp_path):
  loud = np.clip(tone(440.0, 1.0, SR, amplitude=2.0, channels=2), -1, 1)
  sf.write(tmp_path / "loud.wav", loud.T, SR)
  loaded = load_audio(tmp_path / "loud.wav", sample_rate=SR, max_seconds=4.0)
  assert loaded.warnings and "clipped" in loaded.warnings[0]


def test_pad_to_hop():
  assert pad_to_hop(np.ones((2, 5)), 4).shape == (2, 8)
  assert pad_to_hop(np.ones((2, 8)), 4).shape == (2, 8)
