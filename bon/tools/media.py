"""Images, audio and video for `inspect_file`: shown to the agent's model, described, or transcribed.

- An image goes to the agent's model as image content when that model accepts images (litellm's
  `supports_vision`); otherwise a vision model (`tools.inspect_file.vision_model`) describes it in
  text, through bon's `LLMClient` (limits, retries, response cache).
- Audio is transcribed by a speech-to-text model (`tools.inspect_file.transcription_model`, e.g.
  `whisper-1`, or any OpenAI-compatible server via `transcription_api_base`) through litellm's
  `atranscription`, retried like chat calls and kept in bon's response cache. A video's audio track
  is taken out with ffmpeg first, which must then be on PATH.
Without the model a file needs, the reply is an error naming the option to set.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from bon.llm.cache import ResponseCache, cache_key
from bon.llm.retry import RetryPolicy, classify

NO_MODEL = "no_model"  # no model configured can read this kind of file
TOO_LARGE = "too_large"
MODEL_ERROR = "model_error"  # the vision or speech-to-text call failed
MISSING_FFMPEG = "missing_ffmpeg"
MAX_IMAGE_BYTES = 20 << 20  # what OpenAI accepts per image
MAX_AUDIO_BYTES = 25 << 20  # what OpenAI's transcription endpoint accepts per file
FFMPEG_TIMEOUT_S = 120.0
MAX_IMAGE_SIDE = 2048  # larger images are scaled down to this many pixels on their longer side
MAX_IMAGE_PIXELS = 100_000_000  # past this, decoding is refused (a decompression bomb)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_SENT_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
AUDIO_SUFFIXES = {".mp3", ".m4a", ".wav", ".ogg", ".oga", ".flac", ".mpga", ".mpeg"}
VIDEO_SUFFIXES = {".mov", ".mp4", ".mkv", ".avi", ".webm", ".m4v"}
DESCRIBE_PROMPT = (
    "This image is a file attached to a task an assistant is working on. The task:\n\n{question}\n\n"
    "Describe the image for someone who cannot see it, so they can solve the task: transcribe all visible "
    "text, numbers and labels exactly; give the contents of any table, chart, diagram, map or board "
    "position precisely; then describe the rest briefly. Do not solve the task.")


def prepare_image(path: Path) -> tuple[str, bytes, str]:
    """(MIME type, bytes to send, a note on the size) for the image at `path`; in a bounded worker.

    PNG, JPEG, GIF and WebP up to MAX_IMAGE_SIDE pixels are sent as they are; larger ones are scaled
    down, other formats (BMP, TIFF) converted to PNG. Raises `files.Unreadable` for what is not an image.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    from bon.tools.files import UNSUPPORTED_FILE, Unreadable

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            width, height = image.size
            note = f"{width}x{height} pixels"
            if image.format in _SENT_AS_IS and max(width, height) <= MAX_IMAGE_SIDE:
                return _SENT_AS_IS[image.format], path.read_bytes(), note
            image.seek(0)
            copy = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise Unreadable(UNSUPPORTED_FILE, f"{path.name} is not an image that can be read ({exc}); "
                                           "the python tool can inspect its bytes") from None
    copy.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    out = io.BytesIO()
    copy.save(out, format="PNG", optimize=True)
    if copy.size != (width, height):
        note += f", scaled down to {copy.size[0]}x{copy.size[1]}"
    return "image/png", out.getvalue(), note


def accepts_images(model: str | None) -> bool:
    """Whether litellm knows `model` to accept image input (unknown models: no)."""
    if not model:
        return False
    from bon.llm.transport import import_litellm

    try:
        return bool(import_litellm().supports_vision(model=model))
    except Exception:  # noqa: BLE001 - litellm raises for models it cannot map
        return False


class Media:
    """The vision and speech-to-text models inspect_file may use; built with the tool, so a missing key
    fails before the run starts."""

    def __init__(self, *, vision_model: str | None, vision_api_base: str | None, vision_api_key_env: str | None,
                 transcription_model: str | None, transcription_api_base: str | None,
                 transcription_api_key_env: str | None, cache: bool, timeout: float) -> None:
        from bon.llm import LLMClient

        # bon's response cache ($BON_CACHE_DIR), opened only when a model is configured
        self.cache = ResponseCache("readwrite") if cache and (vision_model or transcription_model) else None
        self.vision = None
        if vision_model:
            self.vision = LLMClient(vision_model, api_base=vision_api_base, api_key_env=vision_api_key_env,
                                    cache=self.cache, timeout=timeout, max_attempts=3, concurrency=4,
                                    role="tools.inspect_file.vision_model")
        self.transcription_model = transcription_model
        self.transcription_api_base = transcription_api_base
        self.transcription_api_key_env = transcription_api_key_env
        self.timeout = timeout
        self._key: str | None = None
        if transcription_model and transcription_api_key_env:
            self._key = os.environ.get(transcription_api_key_env)
            if not self._key:
                from bon.errors import BonError

                raise BonError(f"environment variable {transcription_api_key_env} is not set "
                               "(tools.inspect_file.transcription_api_key_env); it must hold the API key for "
                               f"{transcription_model!r}")
        elif transcription_model and transcription_api_base:
            self._key = "no-key"  # never send the provider's default key to a custom server

    async def aclose(self) -> None:
        if self.cache is not None:
            self.cache.close()

    # -- images
    async def image(self, path: Path, question: str, agent_model: str | None, *, timeout: float,
                    memory_mb: int) -> tuple[str, str | None, str | None]:
        """(text, data URL to show the agent or None, error kind or None) for the image at `path`.

        Decoding runs in a bounded worker (`timeout`, `memory_mb`): images are untrusted too."""
        from bon.tools import bounded

        mime, data, note = await bounded.run(prepare_image, path, timeout=timeout, memory_mb=memory_mb)
        if len(data) > MAX_IMAGE_BYTES:
            return f"{path.name} is {len(data):,} bytes, more than the {MAX_IMAGE_BYTES >> 20} MB an image may be", \
                None, TOO_LARGE
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        head = f"{path.name} ({path.stat().st_size:,} bytes, {note})"
        if accepts_images(agent_model):
            return f"{head}: the image follows as image content.", url, None
        if self.vision is None:
            return (f"{head} is an image, and the agent's model ({agent_model or 'unknown'}) does not accept "
                    "images; set tools.inspect_file.vision_model (e.g. openai/gpt-4o-mini) to have it described"), \
                None, NO_MODEL
        messages = [{"role": "user", "content": [
            {"type": "text", "text": DESCRIBE_PROMPT.format(question=question)},
            {"type": "image_url", "image_url": {"url": url}}]}]
        result = await self.vision.complete(messages)
        description = (result.content or "").strip()
        if not result.ok or not description:
            why = result.error or "an empty description"
            return f"describing {path.name} with {self.vision.model} failed: {result.reason}: {why}", None, MODEL_ERROR
        return f"{head}, described by {self.vision.model}:\n\n{description}", None, None

    # -- audio and video
    async def transcribe(self, path: Path) -> tuple[str, str | None]:
        """(text, error kind or None): the transcript of an audio file or of a video's audio track."""
        if not self.transcription_model:
            return (f"{path.name} needs a speech-to-text model: set tools.inspect_file.transcription_model "
                    "(e.g. whisper-1, or a local OpenAI-compatible server with transcription_api_base)"), NO_MODEL
        if path.suffix.lower() in VIDEO_SUFFIXES:
            with tempfile.TemporaryDirectory(prefix="bon-audio-") as tmp:
                audio, error = await _audio_track(path, Path(tmp) / (path.stem + ".mp3"))
                if error:
                    return audio, error
                return await self._transcribe_file(Path(audio), path.name)
        return await self._transcribe_file(path, path.name)

    async def _transcribe_file(self, path: Path, shown: str) -> tuple[str, str | None]:
        size = path.stat().st_size
        if size > MAX_AUDIO_BYTES:
            return (f"{shown}'s audio is {size:,} bytes, more than the {MAX_AUDIO_BYTES >> 20} MB a transcription "
                    "request may carry; the python tool can cut it"), TOO_LARGE
        data = path.read_bytes()
        model = self.transcription_model
        assert model is not None
        digest = hashlib.sha256(data).hexdigest()
        key = cache_key(model, [{"role": "user", "content": f"transcribe audio sha256:{digest}"}], None,
                        {"api_base": self.transcription_api_base or ""}, 0)
        stored = await self._cached(key)
        if stored is None:
            text, error = await self._call(path.name, data)
            if error:
                return f"transcribing {shown} with {model} failed: {error}", MODEL_ERROR
            if self.cache is not None and self.cache.writable:
                try:
                    await self.cache.aput(key, model, {"text": text})
                except sqlite3.Error:
                    pass  # the transcript is kept for this reply; only its reuse is lost
        else:
            text = str(stored.get("text") or "")
        return f"{shown}: transcript by {model}:\n\n{text.strip() or '(no speech recognised)'}", None

    async def _cached(self, key: str) -> dict[str, Any] | None:
        if self.cache is None:
            return None
        try:
            return await self.cache.aget(key)
        except sqlite3.Error:
            return None

    async def _call(self, name: str, data: bytes) -> tuple[str, str | None]:
        """One transcription, retried on transient failures like chat calls; (text, error or None)."""
        from bon.llm.transport import import_litellm

        litellm = import_litellm()
        kwargs: dict[str, Any] = {"model": self.transcription_model, "file": (name, data), "timeout": self.timeout,
                                  "max_retries": 0}
        if self.transcription_api_base:
            kwargs["api_base"] = self.transcription_api_base
        if self._key:
            kwargs["api_key"] = self._key
        policy, attempt = RetryPolicy(max_attempts=3), 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(self.timeout + 5):
                    response = await litellm.atranscription(**kwargs)
                return str(getattr(response, "text", "") or ""), None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed call is the model's observation
                failure = classify(exc)
                delay = policy.delay(attempt, failure, random.Random())
                if delay is None:
                    message = failure.message
                    if self._key and self._key != "no-key":
                        message = message.replace(self._key, "***")
                    return "", f"{failure.kind}: {message[:300]}"
                await asyncio.sleep(delay)


async def _audio_track(video: Path, out: Path) -> tuple[str, str | None]:
    """(path of the extracted mp3, None) or (message, error kind): ffmpeg takes out the audio track."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return (f"{video.name} is a video: reading its audio track needs ffmpeg on PATH, which was not found "
                "(install it, e.g. apt-get install ffmpeg)"), MISSING_FFMPEG
    process = await asyncio.create_subprocess_exec(
        ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(video), "-vn", "-ac", "1", "-ar", "16000", "-b:a", "48k",
        "-f", "mp3", str(out), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(FFMPEG_TIMEOUT_S):
            _, err = await process.communicate()
    except BaseException as exc:
        process.kill()
        await process.wait()
        if isinstance(exc, TimeoutError):
            return f"ffmpeg took longer than {FFMPEG_TIMEOUT_S:g} s on {video.name}; stopped", "timeout"
        raise
    if process.returncode != 0 or not out.exists():
        return f"ffmpeg could not take the audio track out of {video.name}: {err.decode(errors='replace')[-300:]}", \
            "read_error"
    return str(out), None
