"""Spoken prompts: pieces synthesised with espeak-ng at install time, joined at run time.

When recording resumes after an interruption the device asks the officer, in
the configured language, to explain the stop (Art. 8)::

    Recording was interrupted at 14:32 because of low battery. Please state the reason.
    录像在14点32分因电量低中断。请说明原因。

The time and the reason vary, so the installer synthesises the *pieces* -
fixed phrases, every interruption reason, every hour (0-23) and minute (0-59) -
for both languages into a prompt folder (``python -m device.prompts build
[DIR]``), and :class:`PromptLibrary` joins the pieces for one prompt into one
buffer of mono int16 PCM at :data:`PROMPT_RATE` for the speaker. The device
then needs no speech synthesiser at run time, and a prompt is ready in 1-3
milliseconds.

The folder
----------
``DIR/manifest.json`` says what was built (format, rate, espeak-ng version,
each language's voice and the text of every piece) and ``DIR/<language>/<piece>.wav``
holds one trimmed piece. A build is skipped when the manifest already
describes exactly what would be built, so the build step is cheap to repeat;
otherwise the folder is rebuilt beside the old one and swapped in whole.
Each language is spoken by one espeak-ng process (:func:`synthesise_many`).
The default folder is :func:`default_prompt_dir`:
``$CUSTODY_PROMPTS`` if set, else ``<sys.prefix>/share/custody/prompts``
(inside the venv on a development machine).

Voices
------
English uses espeak-ng's ``en`` voice. Chinese uses ``cmn-latn-pinyin``, not
``cmn``: with Debian 12's espeak-ng 1.51, the ``cmn`` voice reads many common
characters (四, 点, 电, 录, ...) as their pinyin spelled out in English ("dian
three"), while ``cmn-latn-pinyin`` reads the same Chinese text correctly. The
character 地 is always read as the particle "de", so no phrase uses it.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp()) / "prompts"
>>> try:
...     PromptLibrary(folder, "en")
... except PromptLibraryMissing as missing:
...     print(str(missing).replace(str(folder), "DIR"))
no prompt library in DIR (build it with: python -m device.prompts build DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import wave
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

import av
import numpy as np

from hardware.espeak import (
    ESPEAK,
    MANIFEST,
    build_folder,
    built_already,
    espeak,
    espeak_version,
    with_build_key,
)
from hardware.speaker import Prompt, save_wav
from protocol.entries import INTERRUPTION_REASONS

PROMPT_RATE = 48_000  # the microphone's default rate: the simulator echoes only matching prompts
FORMAT = 1  # of the folder; a change rebuilds it
LANGUAGES = ("zh", "en")  # as device/config.py's ``language``
PROMPT_DIR_ENV = "CUSTODY_PROMPTS"
SPEED_WPM = 150  # espeak-ng's default is 175; slower is clearer outdoors
# espeak-ng peaks at full scale and resampling overshoots a little: -3 dB keeps it unclipped.
GAIN = 0.7
# Joining: pieces are trimmed of espeak-ng's own silence, then set apart by these.
LEAD_SECONDS = 0.10  # before the first word, so an amplifier waking up does not eat it
WORD_GAP_SECONDS = 0.06
SENTENCE_GAP_SECONDS = 0.35
TAIL_SECONDS = 0.15
_TRIM_LEVEL = 0.01  # of full scale (-40 dBFS): quieter edges are silence
_TRIM_MARGIN_SECONDS = 0.01
_FADE_SECONDS = 0.005  # a cut edge must not click
_PAUSE = "|"  # in a template: a sentence break
# Batch synthesis: texts are separated by this break (far longer than any pause espeak-ng
# makes inside a text) and cut apart at digital silence of half that length.
_BATCH_BREAK_MS = 1500
_DIGITAL_SILENCE = 8


@dataclass(frozen=True)
class Language:
    """One language's voice, phrases and prompt templates."""

    code: str  # "en", "zh"
    voice: str
    phrases: dict[str, str]  # piece name -> text given to espeak-ng
    reasons: dict[str, str]  # interruption reason -> its words in "because of ..."
    interruption: tuple[str, ...]  # piece names; {hour} {minute} {reason}; "|" a pause
    separator: str  # between pieces when showing a prompt's text

    def hour_text(self, hour: int) -> str:
        if self.code == "en":
            return str(hour)
        return "两点" if hour == 2 else f"{hour}点"  # 2 o'clock is liang dian, not er dian

    def minute_text(self, minute: int) -> str:
        if self.code == "en":  # 24-hour time as spoken: "fourteen hundred", "nine oh five"
            return "hundred" if minute == 0 else f"oh {minute}" if minute < 10 else str(minute)
        return "整" if minute == 0 else f"零{minute}分" if minute < 10 else f"{minute}分"

    def pieces(self) -> dict[str, str]:
        """Every piece to synthesise: name -> text."""
        pieces = dict(self.phrases)
        pieces.update({f"reason_{reason}": text for reason, text in self.reasons.items()})
        pieces.update({f"hour_{hour}": self.hour_text(hour) for hour in range(24)})
        pieces.update({f"minute_{minute}": self.minute_text(minute) for minute in range(60)})
        return pieces


LANGUAGE_TABLE: dict[str, Language] = {
    "en": Language(
        code="en",
        voice="en",
        phrases={
            "interrupted_at": "Recording was interrupted at",
            "because_of": "because of",
            "state_reason": "Please state the reason.",
            "exemption_confirmed": "Exemption confirmed.",
            "voice_note_saved": "Voice note saved.",
            "no_speech_heard": "No speech was heard. The prompt will repeat.",
        },
        reasons={
            "battery": "low battery",
            "storage_full": "full storage",
            "camera_fault": "a camera fault",
            "mic_fault": "a microphone fault",
            "power_loss": "a power loss",
            "crash": "a system crash",
            "weather": "the weather",
            "location_change": "a change of location",
            "other": "another reason",
        },
        interruption=("interrupted_at", "hour_{hour}", "minute_{minute}", "because_of",
                      "reason_{reason}", _PAUSE, "state_reason"),
        separator=" ",
    ),
    "zh": Language(
        code="zh",
        voice="cmn-latn-pinyin",
        phrases={
            "interrupted_at": "录像在",
            "because_of": "因",
            "interrupted": "中断。",
            "state_reason": "请说明原因。",
            "exemption_confirmed": "免录已确认。",
            "voice_note_saved": "语音说明已保存。",
            "no_speech_heard": "未听到讲话，将重复提示。",
        },
        reasons={
            "battery": "电量低",
            "storage_full": "存储已满",
            "camera_fault": "摄像头故障",
            "mic_fault": "麦克风故障",
            "power_loss": "断电",
            "crash": "系统崩溃",
            "weather": "天气原因",
            "location_change": "转移现场",
            "other": "其他原因",
        },
        interruption=("interrupted_at", "hour_{hour}", "minute_{minute}", "because_of",
                      "reason_{reason}", "interrupted", _PAUSE, "state_reason"),
        separator="",
    ),
}
# Every reason the ledger allows must be speakable.
assert all(set(lang.reasons) == set(INTERRUPTION_REASONS) for lang in LANGUAGE_TABLE.values())


class PromptLibraryMissing(FileNotFoundError):
    """The prompt folder (or a piece in it) is missing, incomplete or outdated."""

    def __init__(self, directory: Path, problem: str) -> None:
        self.directory = directory
        super().__init__(f"{problem} (build it with: python -m device.prompts build {directory})")


def default_prompt_dir() -> Path:
    """``$CUSTODY_PROMPTS``, else ``<sys.prefix>/share/custody/prompts``."""
    override = os.environ.get(PROMPT_DIR_ENV)
    return Path(override) if override else Path(sys.prefix) / "share" / "custody" / "prompts"


# -- synthesis (install time) ------------------------------------------------------------


def synthesise(text: str, voice: str, rate: int = PROMPT_RATE,
               speed_wpm: int = SPEED_WPM) -> np.ndarray:
    """``text`` spoken by espeak-ng ``voice``, as mono int16 at ``rate`` (untrimmed).

    espeak-ng renders at its own rate (22 050 Hz); PyAV (FFmpeg's swresample)
    converts it.
    """
    native, native_rate = espeak([text], voice, speed_wpm)
    return resample(native, native_rate, rate, gain=GAIN)


def synthesise_many(texts: Sequence[str], voice: str, rate: int = PROMPT_RATE,
                    speed_wpm: int = SPEED_WPM) -> list[np.ndarray]:
    """Each of ``texts`` spoken by espeak-ng ``voice``, as mono int16 at ``rate`` (untrimmed).

    One espeak-ng process speaks them all, as SSML with a long break between
    texts, and the result is cut at those breaks: about 40 times faster than a
    process per text, whose start-up (loading the voice and its dictionary)
    costs more than the speech. If the cut does not give one part per text
    (a text with a pause as long as the break), each text is spoken alone.
    """
    ssml = "<speak>" + "".join(f'{escape(text)}<break time="{_BATCH_BREAK_MS}ms"/>'
                               for text in texts) + "</speak>"
    native, native_rate = espeak(["-m", ssml], voice, speed_wpm)
    parts = _split_at_silence(native, native_rate, _BATCH_BREAK_MS / 1000 / 2)
    if len(parts) != len(texts):
        return [synthesise(text, voice, rate, speed_wpm) for text in texts]
    return [resample(part, native_rate, rate, gain=GAIN) for part in parts]


def _split_at_silence(samples: np.ndarray, rate: int, min_gap_seconds: float) -> list[np.ndarray]:
    """The non-silent stretches of ``samples`` separated by at least ``min_gap_seconds``."""
    quiet = np.abs(samples.astype(np.int32)) <= _DIGITAL_SILENCE
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    parts, position = [], 0
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start >= min_gap_seconds * rate:
            parts.append(samples[position:start])
            position = end
    parts.append(samples[position:])
    return [part for part in parts if np.any(np.abs(part.astype(np.int32)) > _DIGITAL_SILENCE)]


def resample(samples: np.ndarray, from_rate: int, to_rate: int, gain: float = 1.0) -> np.ndarray:
    """Mono int16 from one rate to another (and scaled by ``gain``), via PyAV."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    joined = np.concatenate(out) if out else np.zeros(0, np.float32)
    return np.clip(np.round(joined * gain * 32767), -32768, 32767).astype(np.int16)


def trim(samples: np.ndarray, rate: int) -> np.ndarray:
    """Cut the silence off both ends (keeping a 10 ms margin) and fade the cut edges."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _TRIM_LEVEL * 32767)
    if len(loud) == 0:
        return np.zeros(0, np.int16)
    margin = int(_TRIM_MARGIN_SECONDS * rate)
    piece = samples[max(0, loud[0] - margin) : loud[-1] + margin + 1].astype(np.float64)
    fade = min(int(_FADE_SECONDS * rate), len(piece) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        piece[:fade] *= ramp
        piece[len(piece) - fade :] *= ramp[::-1]
    return np.round(piece).astype(np.int16)


@dataclass(frozen=True)
class BuildResult:
    directory: Path
    built: bool  # False: the folder was already up to date
    pieces: int
    seconds: float  # wall time of this call


def _manifest(languages: Sequence[str], version: str) -> dict:
    spec = {
        "format": FORMAT,
        "rate": PROMPT_RATE,
        "espeak_ng": version,
        "speed_wpm": SPEED_WPM,
        "synthesis": f"ssml-batch, break {_BATCH_BREAK_MS} ms, gain {GAIN}",
        "languages": {
            code: {"voice": LANGUAGE_TABLE[code].voice, "pieces": LANGUAGE_TABLE[code].pieces()}
            for code in languages
        },
    }
    return with_build_key(spec)


def build_prompts(out_dir: str | os.PathLike[str] | None = None,
                  languages: Iterable[str] = LANGUAGES) -> BuildResult:
    """Synthesise every piece of ``languages`` into ``out_dir`` (default: the default folder).

    Idempotent: returns at once (``built=False``) if the folder already holds
    exactly this build. Otherwise builds into a sibling folder and swaps it in,
    so a reader never sees a half-built library.
    """
    started = time.perf_counter()
    directory = Path(out_dir) if out_dir is not None else default_prompt_dir()
    codes = list(dict.fromkeys(languages))
    for code in codes:
        if code not in LANGUAGE_TABLE:
            raise ValueError(f"unknown language {code!r}; known: {', '.join(LANGUAGE_TABLE)}")
    wanted = _manifest(codes, espeak_version())
    count = sum(len(language["pieces"]) for language in wanted["languages"].values())
    if built_already(directory, wanted, (f"{code}/{name}.wav" for code, language in
                                         wanted["languages"].items()
                                         for name in language["pieces"])):
        return BuildResult(directory, False, count, time.perf_counter() - started)

    def speak_all(staging: Path) -> None:
        for code in codes:
            (staging / code).mkdir()
            pieces = wanted["languages"][code]["pieces"]
            spoken = synthesise_many(list(pieces.values()), LANGUAGE_TABLE[code].voice)
            for (name, text), samples in zip(pieces.items(), spoken, strict=True):
                piece = trim(samples, PROMPT_RATE)
                if len(piece) == 0:
                    raise RuntimeError(f"{ESPEAK} produced silence for {code} piece {name}: "
                                       f"{text!r}")
                save_wav(staging / code / f"{name}.wav", piece, PROMPT_RATE)

    build_folder(directory, wanted, speak_all)
    return BuildResult(directory, True, count, time.perf_counter() - started)


# -- joining (run time) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpokenPrompt(Prompt):
    """A prompt ready for the speaker (a :class:`~hardware.speaker.Prompt`), with its text.

    It unpacks as ``samples, rate = prompt``.
    """

    text: str = ""

    def __iter__(self) -> Iterator[np.ndarray | int]:
        return iter((self.samples, self.rate))

    def write_wav(self, path: str | os.PathLike[str]) -> None:
        """Save as a 16-bit mono WAV (what ``speaker.play(path)`` takes)."""
        save_wav(path, self.samples, self.rate)


class PromptLibrary:
    """A built prompt folder in one language; joins pieces into prompts.

    >>> library = PromptLibrary(language="en")                     # doctest: +SKIP
    >>> when = datetime(2025, 3, 1, 14, 32)
    >>> samples, rate = library.interruption_prompt(when, "battery")  # doctest: +SKIP
    >>> library.interruption_prompt(when, "battery").text          # doctest: +SKIP
    'Recording was interrupted at 14:32 because of low battery. Please state the reason.'
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 language: str = "zh") -> None:
        if language not in LANGUAGE_TABLE:
            raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGE_TABLE)}")
        self.directory = Path(directory) if directory is not None else default_prompt_dir()
        self.language = language
        self._table = LANGUAGE_TABLE[language]
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PromptLibraryMissing(self.directory,
                                       f"no prompt library in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise PromptLibraryMissing(self.directory,
                                       f"unreadable {self.directory / MANIFEST}: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise PromptLibraryMissing(self.directory, f"the prompt library in {self.directory} "
                                       "was built by another version")
        if language not in manifest.get("languages", {}):
            raise PromptLibraryMissing(self.directory, f"the prompt library in {self.directory} "
                                       f"has no {language!r} prompts")
        self.rate: int = manifest["rate"]
        self._texts: dict[str, str] = manifest["languages"][language]["pieces"]
        self._pieces: dict[str, np.ndarray] = {}

    def piece(self, name: str) -> np.ndarray:
        """One piece's samples (read once, then kept)."""
        if name not in self._pieces:
            path = self.directory / self.language / f"{name}.wav"
            try:
                with wave.open(str(path), "rb") as wav:
                    if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (
                            self.rate, 1, 2):
                        raise PromptLibraryMissing(self.directory, f"{path}: not mono 16-bit "
                                                   f"PCM at {self.rate} Hz")
                    data = wav.readframes(wav.getnframes())
            except FileNotFoundError:
                raise PromptLibraryMissing(self.directory, f"missing prompt piece {path}") from None
            self._pieces[name] = np.frombuffer(data, dtype="<i2").astype(np.int16)
        return self._pieces[name]

    def say(self, names: Sequence[str]) -> SpokenPrompt:
        """Join pieces (``"|"``: a sentence pause) into one prompt."""
        rate = self.rate
        parts = [np.zeros(int(LEAD_SECONDS * rate), np.int16)]
        words: list[str] = []  # the prompt's text, for logs and the sim speaker's record
        hour = 0
        previous_was_piece = False
        for name in names:
            if name == _PAUSE:
                parts.append(np.zeros(int(SENTENCE_GAP_SECONDS * rate), np.int16))
                if words and words[-1][-1:] not in ".。":
                    words[-1] += "." if self._table.separator else "。"
                previous_was_piece = False
                continue
            if previous_was_piece:
                parts.append(np.zeros(int(WORD_GAP_SECONDS * rate), np.int16))
            parts.append(self.piece(name))
            previous_was_piece = True
            # A time is shown as 14:32, whatever words say it.
            kind, _, number = name.partition("_")
            if kind == "hour" and number.isdigit():
                hour = int(number)
            elif kind == "minute" and number.isdigit():
                words.append(f"{hour}:{int(number):02d}")
            else:
                words.append(self._texts.get(name, name))
        parts.append(np.zeros(int(TAIL_SECONDS * rate), np.int16))
        label = "+".join(name for name in names if name != _PAUSE)
        text = self._table.separator.join(words)
        return SpokenPrompt(np.concatenate(parts), rate, label, text)

    def interruption_prompt(self, when: datetime, reason: str) -> SpokenPrompt:
        """'Recording was interrupted at HH:MM because of REASON. Please state the reason.'

        ``when`` is read as local time: a naive datetime as it is, an aware one
        converted to the system's local zone first.
        """
        if reason not in self._table.reasons:
            raise ValueError(f"unknown interruption reason {reason!r}; "
                             f"known: {', '.join(self._table.reasons)}")
        local = when.astimezone() if when.tzinfo is not None else when
        names = [piece.format(hour=local.hour, minute=local.minute, reason=reason)
                 for piece in self._table.interruption]
        return self.say(names)

    def exemption_confirmed(self) -> SpokenPrompt:
        return self.say(["exemption_confirmed"])

    def voice_note_saved(self) -> SpokenPrompt:
        return self.say(["voice_note_saved"])

    def no_speech_heard(self) -> SpokenPrompt:
        """'No speech was heard. The prompt will repeat.'"""
        return self.say(["no_speech_heard"])


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m device.prompts build [DIR] [--language zh --language en]``."""
    parser = argparse.ArgumentParser(prog="python -m device.prompts",
                                     description="Synthesise the spoken prompts (install time).")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="synthesise every prompt piece into DIR")
    build.add_argument("directory", nargs="?", type=Path,
                       help=f"prompt folder (default: {default_prompt_dir()})")
    build.add_argument("--language", action="append", choices=LANGUAGES,
                       help="only this language (repeatable; default: all)")
    say = commands.add_parser("say", help="write one interruption prompt to a WAV file")
    say.add_argument("wav", type=Path)
    say.add_argument("--dir", type=Path, default=None)
    say.add_argument("--language", choices=LANGUAGES, default="zh")
    say.add_argument("--reason", choices=INTERRUPTION_REASONS, default="battery")
    say.add_argument("--time", default=None, help="HH:MM (default: now)")
    args = parser.parse_args(argv)
    if args.command == "build":
        result = build_prompts(args.directory, args.language or LANGUAGES)
        state = "built" if result.built else "already up to date"
        print(f"prompts {state}: {result.pieces} pieces in {result.directory} "
              f"({result.seconds:.1f} s)")
        return 0
    when = datetime.now()
    if args.time:
        when = datetime.strptime(args.time, "%H:%M")
    try:
        prompt = PromptLibrary(args.dir, args.language).interruption_prompt(when, args.reason)
    except PromptLibraryMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    prompt.write_wav(args.wav)
    print(f"{args.wav}: {prompt.seconds:.1f} s: {prompt.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
