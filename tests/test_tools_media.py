"""inspect_file on images, audio and video: shown to an image-reading agent, described by a vision model,
or transcribed, over loopback HTTP to the fake server; fixture files are made here."""
from __future__ import annotations

import asyncio
import base64
import io
import struct
import wave
import zlib
from pathlib import Path

import pytest
from llm_server import FakeLLMServer, llm_env_fixture, llm_server_fixture, text, tool_call  # noqa: F401 - pytest fixtures

from bon import tools as tool_registry
from bon.generators.agent import AgentGenerator
from bon.llm import LLMClient
from bon.tools.base import ToolContext, ToolResult
from bon.tools.files import InspectFile
from bon.types import Task

TASK = Task("t1", "What number is written in the image?")


def tiny_png() -> bytes:
    """A valid 2x2 RGB PNG, written by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tiny_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return out.getvalue()


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path / "cache"))  # descriptions and transcripts are cached here
    directory = tmp_path / "files"
    directory.mkdir()
    (directory / "picture.png").write_bytes(tiny_png())
    (directory / "speech.wav").write_bytes(tiny_wav())
    (directory / "clip.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  ")
    (directory / "fake.jpg").write_bytes(b"not an image at all")
    return directory


def inspect(tool: InspectFile, files: Path, path: str, model: str | None = None) -> ToolResult:
    return asyncio.run(tool.call({"path": path}, ToolContext(TASK, files_dir=files, model=model)))


def test_without_a_model_images_and_audio_say_which_option_to_set(files: Path) -> None:
    tool = InspectFile()
    image = inspect(tool, files, "picture.png", model="openai/test-model")
    assert image.error_kind == "no_model" and "tools.inspect_file.vision_model" in image.content
    audio = inspect(tool, files, "speech.wav")
    assert audio.error_kind == "no_model" and "tools.inspect_file.transcription_model" in audio.content
    assert inspect(tool, files, "fake.jpg").error_kind == "unsupported_file"  # the bytes decide, not the suffix


def test_an_image_reading_agent_gets_the_image_itself(files: Path) -> None:
    result = inspect(InspectFile(), files, "picture.png", model="openai/gpt-4o")
    assert result.error_kind is None
    assert result.images == ("data:image/png;base64," + base64.b64encode(tiny_png()).decode(),)


def test_large_or_unusual_images_are_scaled_down_or_converted(files: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4096, 100), "blue").save(files / "wide.png")
    Image.new("RGB", (30, 20), "green").save(files / "old.bmp")
    wide = inspect(InspectFile(), files, "wide.png", model="openai/gpt-4o")
    assert wide.error_kind is None and "scaled down to 2048x50" in wide.content
    with Image.open(io.BytesIO(base64.b64decode(wide.images[0].split(",", 1)[1]))) as sent:
        assert sent.size == (2048, 50)
    Image.new("RGB", (40, 30), "red").save(files / "photo.jpg")
    photo = inspect(InspectFile(), files, "photo.jpg", model="openai/gpt-4o")
    assert photo.images == ("data:image/jpeg;base64," + base64.b64encode((files / "photo.jpg").read_bytes()).decode(),)
    bmp = inspect(InspectFile(), files, "old.bmp", model="openai/gpt-4o")
    assert bmp.error_kind is None and bmp.images[0].startswith("data:image/png;base64,")


def test_a_vision_model_describes_the_image_once(files: Path, llm_server: FakeLLMServer, llm_env: None) -> None:
    llm_server.script(text("A red square with the number 42 in white."))
    tool = InspectFile(vision_model="openai/test-vision", vision_api_base=llm_server.base_url)
    first = inspect(tool, files, "picture.png", model="openai/test-model")
    assert first.error_kind is None and "the number 42" in first.content and not first.images
    request = llm_server.requests[0].body
    parts = request["messages"][0]["content"]
    assert request["model"] == "test-vision" and TASK.question in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    again = inspect(InspectFile(vision_model="openai/test-vision", vision_api_base=llm_server.base_url),
                    files, "picture.png", model="openai/test-model")
    assert "the number 42" in again.content and llm_server.count == 1  # from bon's response cache


def test_audio_is_transcribed_once(files: Path, llm_server: FakeLLMServer, llm_env: None) -> None:
    llm_server.script(text("the answer is forty two"))
    make = lambda: InspectFile(transcription_model="openai/whisper-1",  # noqa: E731
                               transcription_api_base=llm_server.base_url)
    result = inspect(make(), files, "speech.wav")
    assert result.error_kind is None and "the answer is forty two" in result.content
    request = llm_server.requests[0]
    assert request.path.endswith("/audio/transcriptions") and tiny_wav() in request.raw
    assert "the answer is forty two" in inspect(make(), files, "speech.wav").content
    assert llm_server.count == 1


def test_a_failed_transcription_is_an_error_not_a_transcript(files: Path, llm_server: FakeLLMServer,
                                                             llm_env: None) -> None:
    from llm_server import bad_request

    llm_server.script(bad_request("unsupported audio"))
    result = inspect(InspectFile(transcription_model="openai/whisper-1", transcription_api_base=llm_server.base_url,
                                 media_cache=False), files, "speech.wav")
    assert result.error_kind == "model_error" and "unsupported audio" in result.content


def test_video_needs_ffmpeg_and_says_so(files: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg here
    result = inspect(InspectFile(transcription_model="openai/whisper-1", transcription_api_base="http://127.0.0.1:9"),
                     files, "clip.mov")
    assert result.error_kind == "missing_ffmpeg" and "ffmpeg" in result.content


def test_the_agent_sees_returned_images_after_the_tool_messages(files: Path, llm_server: FakeLLMServer,
                                                                 llm_env: None) -> None:
    llm_server.script(tool_call("inspect_file", {"path": "picture.png"}), text("FINAL ANSWER: 42"))
    client = LLMClient("openai/gpt-4o", api_base=llm_server.base_url, max_attempts=1)
    generator = AgentGenerator(client, tool_registry.get(["inspect_file", "final_answer"]))
    generator._files[TASK.id] = files  # the task's files, as materialised for a run
    trajectory = asyncio.run(generator.generate(TASK, 0))
    assert trajectory.answer == "42"
    sent = llm_server.requests[1].body["messages"]
    roles = [m["role"] for m in sent]
    assert roles[-2:] == ["tool", "user"]
    assert sent[-1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
