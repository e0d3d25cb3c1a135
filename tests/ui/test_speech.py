"""Text-to-speech through the libespeak-ng bundled with espeakng-loader: real synthesis, no mocks."""

from __future__ import annotations

import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from vtm.ui.speech import SpeechError, _open_engine, speak_to_wav, synthesize, write_wav

SENTENCE = "A red car enters the frame at 12 seconds."


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth()) == (1, 2)
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2"), f.getframerate()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_sentence_becomes_an_audible_wav(tmp_path):
    out = speak_to_wav(SENTENCE, tmp_path / "summary.wav")
    assert out == tmp_path / "summary.wav"
    samples, rate = read_wav(out)
    assert rate == 22050
    assert 1.0 < len(samples) / rate < 10.0
    assert rms(samples) > 300  # speech, not silence or dither


def test_synthesize_returns_int16_and_the_sample_rate():
    samples, rate = synthesize(SENTENCE)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert rate == 22050


def test_longer_text_gives_longer_audio(tmp_path):
    short = read_wav(speak_to_wav(SENTENCE, tmp_path / "short.wav"))[0]
    long_text = " ".join([SENTENCE, "Then a person walks in from the left and opens the door."] * 20)
    long = read_wav(speak_to_wav(long_text, tmp_path / "long.wav"))[0]
    assert len(long) > 10 * len(short)


def test_slower_rate_gives_longer_audio():
    fast, _ = synthesize(SENTENCE, rate_wpm=300)
    slow, _ = synthesize(SENTENCE, rate_wpm=120)
    assert len(slow) > 1.5 * len(fast)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_rejected(text, tmp_path):
    with pytest.raises(ValueError):
        synthesize(text)
    with pytest.raises(ValueError):
        speak_to_wav(text, tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


def test_unknown_voice_and_bad_rate_are_rejected():
    with pytest.raises(ValueError, match="no voice"):
        synthesize(SENTENCE, voice="xx-nonexistent")
    with pytest.raises(ValueError, match="rate_wpm"):
        synthesize(SENTENCE, rate_wpm=5)
    assert len(synthesize(SENTENCE)[0]) > 0  # the engine still works afterwards


def test_four_threads_at_once_give_four_valid_wavs(tmp_path):
    # Texts of clearly different lengths, so audio that went to the wrong caller would show.
    texts = [" ".join([f"Event {i}: a red car enters the frame."] * (i + 1)) for i in range(4)]
    paths = [tmp_path / f"t{i}.wav" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(speak_to_wav, texts, paths))
    assert written == paths
    for text, path in zip(texts, paths):
        samples, rate = read_wav(path)
        alone = len(synthesize(text)[0])
        # espeak carries a little state between calls: the same text differs by a few samples.
        assert rate == 22050 and abs(len(samples) - alone) < 0.01 * alone and rms(samples) > 300


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out" / "summary.wav"
    target.parent.mkdir()
    target.write_bytes(b"old")
    speak_to_wav(SENTENCE, target)
    assert [p.name for p in target.parent.iterdir()] == ["summary.wav"]
    assert read_wav(target)[1] == 22050


def test_write_wav_rejects_float_samples(tmp_path):
    with pytest.raises(TypeError):
        write_wav(tmp_path / "f.wav", np.zeros(100, dtype=np.float32), 22050)
    assert list(tmp_path.iterdir()) == []


def test_missing_voice_data_is_a_clear_error(tmp_path):
    with pytest.raises(SpeechError, match="phontab.*espeakng-loader"):
        _open_engine(tmp_path / "libespeak-ng.so", tmp_path / "espeak-ng-data")


def test_missing_library_is_a_clear_error(tmp_path):
    data_dir = tmp_path / "espeak-ng-data"
    data_dir.mkdir()
    (data_dir / "phontab").write_bytes(b"")
    with pytest.raises(SpeechError, match="cannot load the espeak-ng library.*espeakng-loader"):
        _open_engine(tmp_path / "libespeak-ng.so", data_dir)
