"""Offline text-to-speech of a video summary to a WAV file, from pip alone.

The speech engine is libespeak-ng, called directly through ctypes. The `espeakng-loader` wheel ships
both the shared library and its voice data (`espeak-ng-data/`), so nothing has to be installed with
the system package manager and nothing is downloaded at run time: a plain `pip install` gives a
working voice on an offline machine. Wrappers such as `py-espeak-ng` or `pyttsx3` look for a system
espeak instead, and neural voices would need model weights.

espeak-ng keeps all of its state in globals, so the library is initialised once per process and
every synthesis runs under one lock (the web UI calls `synthesize` from worker threads).
"""

from __future__ import annotations

import ctypes
import threading
import wave
from pathlib import Path

import numpy as np

from vtm.cache.atomic import atomic_path

DEFAULT_RATE_WPM = 165
DEFAULT_VOICE = "en"
# espeak's own bounds for espeakRATE (espeakRATE_MINIMUM, espeakRATE_MAXIMUM in speak_lib.h).
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450

# Constants from espeak-ng's speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it, a missing data directory calls exit(1) inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE = 1
_EE_OK = 0
_BUFFER_MS = 0  # 0: espeak's default of 60 ms per callback

# int cb(short *wav, int numsamples, espeak_EVENT *events); the events are not read here.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_REINSTALL = "reinstall it with `pip install --force-reinstall espeakng-loader==0.2.4`"


class SpeechError(RuntimeError):
    """The speech engine cannot be loaded; the message names what is missing and what to do."""


class _Engine:
    """The process's one initialised libespeak-ng; use only while holding `_LOCK`."""

    def __init__(self, lib: ctypes.CDLL, sample_rate: int):
        self.lib = lib
        self.sample_rate = sample_rate
        self.chunks: list[bytes] = []
        # Kept on the instance: ctypes frees the C trampoline when the Python object is collected.
        self.callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav, numsamples: int, events) -> int:
        if wav and numsamples > 0:
            self.chunks.append(ctypes.string_at(wav, numsamples * ctypes.sizeof(ctypes.c_short)))
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, rate_wpm: int, voice: str) -> np.ndarray:
        # Voice and rate are set on every call: another caller may have changed them.
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice named {voice!r} (try 'en', 'en-us', 'de', 'fr')")
        self.lib.espeak_SetParameter(_RATE, rate_wpm, 0)
        data = text.encode("utf-8") + b"\0"
        self.chunks = []
        try:
            status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
            self.lib.espeak_Synchronize()
            if status != _EE_OK:
                raise SpeechError(f"espeak_Synth failed with status {status}")
            return np.frombuffer(b"".join(self.chunks), dtype=np.int16).copy()
        finally:
            self.chunks = []


_LOCK = threading.Lock()
_engine: _Engine | None = None


def _bind(lib: ctypes.CDLL) -> None:
    """Declare the C signatures; a wrong width here would corrupt the stack, not raise."""
    c_int, c_uint, c_char_p, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p
    lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
    lib.espeak_Initialize.restype = c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [c_char_p]
    lib.espeak_SetVoiceByName.restype = c_int
    lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
    lib.espeak_SetParameter.restype = c_int
    lib.espeak_Synth.argtypes = [
        c_void_p,
        ctypes.c_size_t,
        c_uint,
        c_int,
        c_uint,
        c_uint,
        ctypes.POINTER(c_uint),
        c_void_p,
    ]
    lib.espeak_Synth.restype = c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = c_int


def _packaged_paths() -> tuple[Path, Path]:
    """(shared library, espeak-ng-data directory) as shipped by the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError as e:
        raise SpeechError(
            f"text-to-speech needs the espeakng-loader package, which is not installed ({e}); "
            "install it with `pip install espeakng-loader==0.2.4`"
        ) from e
    package_dir = Path(espeakng_loader.__file__).parent
    return Path(espeakng_loader.get_library_path()), package_dir / "espeak-ng-data"


def _open_engine(library: Path, data_dir: Path) -> _Engine:
    """Load libespeak-ng from `library` and initialise it with the voice data in `data_dir`.

    Everything that can be checked from Python is checked before the library is initialised: with a
    missing data directory espeak-ng prints an error, falls back to a path compiled into the wheel
    (a CI build directory) and leaves its globals half set up.
    """
    if not (data_dir / "phontab").is_file():
        raise SpeechError(
            f"espeak-ng voice data not found: {data_dir / 'phontab'} is missing "
            f"(the espeakng-loader package is incomplete); {_REINSTALL}"
        )
    try:
        lib = ctypes.CDLL(str(library))
    except OSError as e:
        raise SpeechError(f"cannot load the espeak-ng library {library} ({e}); {_REINSTALL}") from e
    _bind(lib)
    # The path is the directory that *contains* espeak-ng-data (speak_lib.h); 1.52 would also take
    # the data directory itself, older releases would not.
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, str(data_dir.parent).encode(), _INITIALIZE_DONT_EXIT
    )
    if sample_rate <= 0:  # -1 is documented; 1.52 returns 0 when the data cannot be read
        raise SpeechError(
            f"espeak-ng could not initialise from the voice data in {data_dir} "
            f"(espeak_Initialize returned {sample_rate}; its message is on stderr); {_REINSTALL}"
        )
    return _Engine(lib, sample_rate)


def synthesize(text: str, rate_wpm: int = DEFAULT_RATE_WPM, voice: str = DEFAULT_VOICE) -> tuple[np.ndarray, int]:
    """Speak `text`; returns (int16 mono samples, sample rate in Hz). Safe to call from any thread."""
    global _engine
    if not text or not text.strip():
        raise ValueError("nothing to speak: the text is empty")
    if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
        raise ValueError(f"rate_wpm must be between {MIN_RATE_WPM} and {MAX_RATE_WPM} words per minute, got {rate_wpm}")
    text = text.replace("\0", " ")  # C strings end at the first NUL
    with _LOCK:
        if _engine is None:
            _engine = _open_engine(*_packaged_paths())
        return _engine.synthesize(text, rate_wpm, voice), _engine.sample_rate


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write int16 mono `samples` as a 16-bit PCM WAV; readers never see a half-written file."""
    data = np.asarray(samples)
    if data.ndim != 1 or not (np.issubdtype(data.dtype, np.integer) or data.size == 0):
        raise TypeError(f"expected 1-D integer (int16) samples, got {data.dtype} with shape {data.shape}")
    if data.size and (data.min() < -32768 or data.max() > 32767):
        raise ValueError("samples are outside the int16 range")
    path = Path(path)
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(data.astype("<i2").tobytes())
    return path


def speak_to_wav(text: str, path: Path, **kw) -> Path:
    """Speak `text` into the WAV file `path`; `kw` goes to `synthesize` (rate_wpm, voice)."""
    samples, sample_rate = synthesize(text, **kw)
    return write_wav(path, samples, sample_rate)
