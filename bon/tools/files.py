"""`inspect_file`: read one of the task's attached files as text, a page at a time.

Files are named relative to the task's directory of attachments (`ToolContext.files_dir`) and must
stay inside it: absolute paths, `..` and symlinks that lead out are refused. What the model sees:

- text (txt, md, jsonl, xml, logs, any UTF-8 file): as is; JSON pretty-printed; HTML as Markdown;
- csv/tsv and xlsx: Markdown tables (xlsx: every sheet, with Excel's row numbers and column letters),
  at most `max_rows` rows per table, with a count of the rest;
- pdf: the text of each page; docx: paragraphs (headings marked) and tables in document order;
  pptx: each slide's title, text, tables and speaker notes, in order (bon.tools.office);
- zip: the members' names and sizes; a member is read by its path through the archive
  (`data.zip/sheet.csv`, nested archives too), after the archive is safely extracted beside itself
  (`data.zip_extracted/`; bon.tools.archive refuses zip slip, links, bombs and oversized archives);
- images, audio and video (bon.tools.media): an image is handed to the agent's model as image content
  when it accepts images, else described by `vision_model`; audio (and a video's audio track, with
  ffmpeg) is transcribed by `transcription_model`; without the model needed, an error names the option.

Long output is split into pages of about `page_chars` characters ("page i of n"); the rendered file
is kept in a small cache, so asking for page 2 does not parse it again.

Attachments are untrusted, so reading is bounded, not just what is shown: at most `max_columns`
columns per row, `max_paragraphs` docx paragraphs and `max_cells` cells per file are read (a sheet's
declared size is ignored), and what was left unread is said in a note. Parsing runs in a worker
process (`bounded`) with `timeout` seconds and `memory_mb` of address space; running out of either is
a `timeout` or `memory_limit` error. The `.` listing never follows a link out of the task's files.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bon.tools import archive, bounded, media
from bon.tools.base import BAD_ARGUMENTS, TIMEOUT, Tool, ToolContext, ToolResult, option
from bon.tools.web import MIN_MEMORY_MB, FetchError, html_to_markdown, page_starts, pdf_to_text

NO_FILES = "no_files"  # the task has no attached files
PATH_REFUSED = "path_refused"  # absolute, `..`, or leads outside the task's files
NOT_FOUND = "not_found"
UNSUPPORTED_FILE = "unsupported_file"
READ_ERROR = "read_error"  # a supported type that could not be parsed
PAGE_OUT_OF_RANGE = "page_out_of_range"
MEMORY_LIMIT = bounded.MEMORY_LIMIT

MAX_TEXT_BYTES = 20 << 20  # text files are read up to this size
MAX_ZIP_MEMBERS = 1000  # members listed
CACHE_SIZE = 8  # rendered files kept for paging
MAX_CELL_CHARS = 2000  # longer cells are shown cut, ending in "…"
SUPPORTED = ("text (txt, md, json, jsonl, xml, html, or any UTF-8 text file), csv, tsv, xlsx, docx, pptx, pdf, "
             "zip (members by path: archive.zip/member), images (png, jpg, gif, webp), audio (mp3, m4a, wav, "
             "ogg, flac) and video (mov, mp4, ...: its audio track)")
_TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".json", ".jsonl", ".ndjson", ".xml", ".html", ".htm", ".xhtml",
                  ".csv", ".tsv", ".tab", ".log", ".yaml", ".yml", ".py", ".tex", ".rst", ".ini", ".cfg",
                  ".toml", ".sql", ".srt", ".vtt"}


class Unreadable(Exception):
    """The file cannot be shown; `kind` is the tool result's error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple:  # raised in a worker process, re-raised here
        return type(self), (self.kind, str(self))


@dataclass(frozen=True)
class Caps:
    """How much of a file is read (not just shown)."""

    max_rows: int = 500  # rows shown per sheet or table (more are counted while cells remain)
    max_columns: int = 100  # columns read per row
    max_cells: int = 200_000  # cells read per file, all sheets or tables together
    max_paragraphs: int = 5000  # docx paragraphs and tables read


class _CellBudget:
    """Counts cells read against `Caps.max_cells`."""

    def __init__(self, caps: Caps) -> None:
        self.left = caps.max_cells
        self.cap = caps.max_cells

    def take(self, n: int) -> bool:
        """Count `n` more cells; False once the budget is spent (the caller stops reading)."""
        self.left -= n
        return self.left >= 0

    def note(self, where: str) -> str:
        return (f"reading stopped {where} after {self.cap:,} cells (tools.inspect_file.max_cells); the rest was "
                "not read: use the python tool to work with the whole file")


# --------------------------------------------------------------------------- rendering


def _cell(value: Any) -> str:
    """A cell as Excel shows it: whole floats without ".0", midnight datetimes as dates."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _short(cell: str) -> str:
    return cell if len(cell) <= MAX_CELL_CHARS else cell[:MAX_CELL_CHARS] + "…"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        cells = [re.sub(r"\s*\n\s*", " ", _short(c)).replace("|", "\\|") for c in cells]
        return "| " + " | ".join(cells) + " |"
    width = len(header)
    out = [line(header), "|" + "---|" * width]
    out += [line(list(row) + [""] * (width - len(row))) for row in rows]
    return "\n".join(out)


def _more_rows(shown: int, total: int, exact: bool = True) -> str:
    if total <= shown:
        return ""
    count = f"{total - shown:,}" if exact else f"at least {total - shown:,}"
    return f"\n({count} more rows not shown; use the python tool to work with the whole table)"


def _columns_note(width: int, caps: Caps, what: str) -> list[str]:
    if width <= caps.max_columns:
        return []
    return [f"{what} has {width:,} columns; only the first {caps.max_columns} were read "
            "(tools.inspect_file.max_columns)"]


def _decode(data: bytes, strict: bool) -> tuple[str, list[str]]:
    """The text of `data`, and notes on how it was decoded."""
    if b"\x00" in data[:8192] and strict:
        raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "binary data")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and len(data) >= MAX_TEXT_BYTES:  # a character cut by the size cap
            return data[:exc.start].decode("utf-8-sig"), []
        if strict:
            raise
        return data.decode("latin-1"), ["the file is not UTF-8; it was decoded as Latin-1"]


def _read_text(path: Path, strict: bool) -> tuple[str, list[str]]:
    with open(path, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    notes = []
    if len(data) > MAX_TEXT_BYTES:
        data = data[:MAX_TEXT_BYTES]
        notes.append(f"only the first {MAX_TEXT_BYTES >> 20} MB of the file are shown")
    text, decode_notes = _decode(data, strict)
    return text, notes + decode_notes


def _render_csv(path: Path, caps: Caps, tab: bool) -> tuple[str, list[str]]:
    text, notes = _read_text(path, strict=False)
    delimiter = "\t"
    if not tab:
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(rows, None)
    if header is None:
        return "(the file is empty)", notes
    budget = _CellBudget(caps)
    budget.take(min(len(header), caps.max_columns))
    kept: list[list[str]] = []
    total, width, stopped = 0, len(header), False
    for row in rows:
        if not budget.take(max(1, min(len(row), caps.max_columns))):
            stopped = True
            break
        total += 1
        width = max(width, len(row))
        if len(kept) < caps.max_rows:
            kept.append(row[:caps.max_columns])
    shown = min(width, caps.max_columns)
    header = header[:shown] + [""] * (shown - len(header))
    if delimiter not in (",", "\t"):
        notes.append(f"columns are separated by {delimiter!r}")
    notes += _columns_note(width, caps, "the table")
    if stopped:
        notes.append(budget.note(f"at data row {total + 1:,}"))
    rows_text = f"at least {total:,}" if stopped else f"{total:,}"
    summary = f"{rows_text} data rows below a header row, {width:,} columns"
    return f"{summary}\n\n{_markdown_table(header, kept)}{_more_rows(len(kept), total, not stopped)}", notes


def _render_xlsx(path: Path, caps: Caps) -> tuple[str, list[str]]:
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    workbook = load_workbook(path, read_only=True, data_only=True)
    budget = _CellBudget(caps)
    notes: list[str] = []
    try:
        parts = []
        for sheet in workbook.worksheets:
            state = "" if sheet.sheet_state == "visible" else f", {sheet.sheet_state}"
            if budget.left <= 0:
                parts.append(f'## Sheet "{sheet.title}"{state}\n\n(not read: the cell budget was spent)')
                continue
            # ignore the declared size (A1:XFD1048576 would pad every row to 16,384 cells): each row is as
            # wide as its own last cell, a missing row is empty
            sheet.reset_dimensions()
            kept: list[tuple[int, list[str]]] = []
            total, width, widest, stopped = 0, 0, 0, False
            for number, values in enumerate(sheet.iter_rows(values_only=True), 1):
                if not budget.take(1 + len(values)):  # an empty row costs one: a million of them is work too
                    stopped = True
                    notes.append(budget.note(f'in sheet "{sheet.title}" at row {number:,}'))
                    break
                cells = [_cell(v) for v in values[:caps.max_columns + 1]]
                while cells and cells[-1] == "":
                    cells.pop()
                if not cells:
                    continue
                widest = max(widest, len(cells))
                cells = cells[:caps.max_columns]
                total += 1
                if len(kept) < caps.max_rows:
                    kept.append((number, cells))
                    width = max(width, len(cells))
            if widest > caps.max_columns:
                notes.append(f'sheet "{sheet.title}" has cells past column {get_column_letter(caps.max_columns)}; '
                             f"only the first {caps.max_columns} columns were read (tools.inspect_file.max_columns)")
            count = f"at least {total:,}" if stopped else f"{total:,}"
            title = f'## Sheet "{sheet.title}" ({count} non-empty rows{state})'
            if not total:
                parts.append(f"{title}\n\n(empty)")
                continue
            header = ["row"] + [get_column_letter(i) for i in range(1, width + 1)]
            table = _markdown_table(header, ([str(n)] + cells for n, cells in kept))
            parts.append(f"{title}\n\n{table}{_more_rows(len(kept), total, not stopped)}")
    finally:
        workbook.close()
    notes.insert(0, f"{len(parts)} sheet(s); cells show stored values (a formula shows its last computed result, "
                    "or nothing if the file was never recalculated)")
    return "\n\n".join(parts), notes


def _render_docx(path: Path, caps: Caps) -> tuple[str, list[str]]:
    from docx import Document
    from docx.table import Table

    document = Document(str(path))
    # a paragraph's own style lookup searches all styles each time (seconds per thousand paragraphs)
    style_names = {style.style_id: style.name or "" for style in document.styles}
    budget = _CellBudget(caps)
    blocks, notes, read = [], [], 0
    for item in document.iter_inner_content():
        if read >= caps.max_paragraphs:
            total = len(document.element.body)
            notes.append(f"only the first {caps.max_paragraphs:,} of about {total:,} paragraphs and tables were read "
                         "(tools.inspect_file.max_paragraphs); use the python tool for the rest")
            break
        read += 1
        if isinstance(item, Table):
            rows, width = [], 0
            for row in item.rows[:caps.max_rows + 1]:
                cells = row.cells
                width = max(width, len(cells))
                if not budget.take(min(len(cells), caps.max_columns)):
                    break
                rows.append([cell.text for cell in cells[:caps.max_columns]])
            if budget.left < 0:
                notes.append(budget.note("in a table"))
                break
            notes += _columns_note(width, caps, "a table")
            if rows:
                shown = max(len(r) for r in rows)
                header = rows[0] + [""] * (shown - len(rows[0]))
                blocks.append(_markdown_table(header, rows[1:]) + _more_rows(len(rows) - 1, len(item.rows) - 1))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = style_names.get(item._p.style or "Normal", "")  # the paragraph's style id, read directly
        level = re.fullmatch(r"Heading (\d)", style)
        if level:
            text = "#" * int(level.group(1)) + " " + text
        elif style == "Title":
            text = "# " + text
        elif style.startswith("List"):
            text = "- " + text
        blocks.append(text)
    return "\n\n".join(blocks) or "(the document has no text)", notes


def _render_pdf(path: Path) -> tuple[str, list[str]]:
    try:
        title, text, pages, with_text = pdf_to_text(path.read_bytes())
    except FetchError as exc:
        raise Unreadable(READ_ERROR, str(exc)) from None
    notes = [f"{pages} PDF page(s)" + (f", title {title!r}" if title else "")]
    if pages and not with_text:
        notes.append("no page has extractable text (a scanned document?)")
    return text, notes


def _render_zip(path: Path) -> tuple[str, list[str]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise Unreadable(READ_ERROR, f"not a readable zip archive ({exc})") from None
    lines = []
    for info in members[:MAX_ZIP_MEMBERS]:
        if info.is_dir():
            lines.append(f"{info.filename} (directory)")
        else:
            locked = ", encrypted" if info.flag_bits & 0x1 else ""
            lines.append(f"{info.filename} ({info.file_size:,} bytes{locked})")
    if len(members) > MAX_ZIP_MEMBERS:
        lines.append(f"... and {len(members) - MAX_ZIP_MEMBERS:,} more members")
    files = sum(not m.is_dir() for m in members)
    notes = [f"{files:,} file(s); read a member with inspect_file by its path inside the archive, e.g. "
             f"'{path.name}/{next((m.filename for m in members if not m.is_dir()), 'member')}'"]
    return "\n".join(lines) or "(the archive is empty)", notes


def _render_html(path: Path) -> tuple[str, list[str]]:
    text, notes = _read_text(path, strict=False)
    _title, markdown, more = html_to_markdown(text, None, None)
    return markdown, notes + more + ["HTML shown as Markdown"]


def _render_json(path: Path) -> tuple[str, list[str]]:
    text, notes = _read_text(path, strict=False)
    if notes:  # cut or not UTF-8: show it as it is
        return text, notes
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False), notes
    except RecursionError:
        return text, ["nested too deeply to lay out; shown as text"]
    except ValueError as exc:
        return text, [f"not valid JSON ({exc}); shown as text"]


def render(path: Path, caps: Caps) -> tuple[str, str, list[str]]:
    """(type label, text, notes) for the file at `path`; raises `Unreadable`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return "CSV table", *_render_csv(path, caps, tab=False)
        if suffix in (".tsv", ".tab"):
            return "TSV table", *_render_csv(path, caps, tab=True)
        if suffix in (".xlsx", ".xlsm"):
            return "Excel workbook", *_render_xlsx(path, caps)
        if suffix == ".docx":
            return "Word document", *_render_docx(path, caps)
        if suffix == ".pdf":
            return "PDF", *_render_pdf(path)
        if suffix == ".pptx":
            from bon.tools.office import render_pptx

            return "PowerPoint presentation", *render_pptx(path, caps)
        if suffix == ".zip":
            return "zip archive", *_render_zip(path)
        if suffix in (".html", ".htm", ".xhtml"):
            return "HTML", *_render_html(path)
        if suffix == ".json":
            return "JSON", *_render_json(path)
        known = suffix in _TEXT_SUFFIXES
        try:
            text, notes = _read_text(path, strict=not known)
        except UnicodeDecodeError:
            raise Unreadable(UNSUPPORTED_FILE, f"{path.name} ({path.stat().st_size:,} bytes) is not a text file "
                                               f"and not a supported type; supported: {SUPPORTED}") from None
        return "text", text, notes
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file is the model's observation, not a crash
        raise Unreadable(READ_ERROR, f"{path.name} could not be read as {suffix.lstrip('.') or 'text'}: "
                                     f"{type(exc).__name__}: {exc}") from None


def render_paged(path: Path, caps: Caps, page_chars: int) -> tuple[str, str, list[str], tuple[int, ...]]:
    """`render`, and where each page starts; what the worker process runs."""
    label, text, notes = render(path, caps)
    return label, text, notes, page_starts(text, page_chars)


# --------------------------------------------------------------------------- the tool


def _listing(directory: Path, base: Path) -> str:
    """The files in `directory` with their sizes; a link leading outside `base` is named, never followed."""
    base = base.resolve()
    shown = []
    for entry in sorted(directory.iterdir()):
        try:
            real = entry.resolve()
        except (OSError, RuntimeError):  # a link loop
            real = None
        if real is None or (real != base and base not in real.parents):
            if entry.is_symlink():
                shown.append(f"{entry.name} (a link leading outside the task's files; not readable)")
            continue
        if real.is_file():
            shown.append(f"{entry.name} ({real.stat().st_size:,} bytes)")
    return ", ".join(shown) or "none"


class InspectFile(Tool):
    name = "inspect_file"
    description = ("Read a file attached to the task, by name (e.g. data.xlsx): text, JSON, HTML, CSV/TSV and "
                   "Excel sheets as tables, PDF, Word and PowerPoint text, zip archives (list one, or read a "
                   "member as archive.zip/member.csv), images (shown or described), audio and video "
                   "(transcribed). Long files come in pages: the reply says 'page i of n'; ask for another with "
                   "`page`. Use path '.' to list the files.")
    parameters = {
        "type": "object", "additionalProperties": False, "required": ["path"],
        "properties": {
            "path": {"type": "string", "description": "the file's name, relative to the task's attached files"},
            "page": {"type": "integer", "minimum": 1, "description": "which page of the file to show (default 1)"},
        },
    }

    def __init__(self, *, page_chars: int = 10_000, max_rows: int = 500, max_columns: int = 100,
                 max_cells: int = 200_000, max_paragraphs: int = 5000, timeout: float = 30.0,
                 memory_mb: int = 1024, zip_max_members: int = 1000, zip_max_mb: int = 500,
                 vision_model: str | None = None, vision_api_base: str | None = None,
                 vision_api_key_env: str | None = None, transcription_model: str | None = None,
                 transcription_api_base: str | None = None, transcription_api_key_env: str | None = None,
                 model_timeout: float = 120.0, media_cache: bool = True) -> None:
        self.page_chars = option("inspect_file", "page_chars", page_chars, integer=True, minimum=500)
        self.caps = Caps(max_rows=option("inspect_file", "max_rows", max_rows, integer=True, minimum=1),
                         max_columns=option("inspect_file", "max_columns", max_columns, integer=True, minimum=1),
                         max_cells=option("inspect_file", "max_cells", max_cells, integer=True, minimum=1),
                         max_paragraphs=option("inspect_file", "max_paragraphs", max_paragraphs, integer=True,
                                               minimum=1))
        self.timeout = float(option("inspect_file", "timeout", timeout, strict=True))
        self.memory_mb = option("inspect_file", "memory_mb", memory_mb, integer=True, minimum=MIN_MEMORY_MB)
        self.zip_max_members = option("inspect_file", "zip_max_members", zip_max_members, integer=True, minimum=1)
        self.zip_max_mb = option("inspect_file", "zip_max_mb", zip_max_mb, integer=True, minimum=1)
        self.media = media.Media(
            vision_model=vision_model, vision_api_base=vision_api_base, vision_api_key_env=vision_api_key_env,
            transcription_model=transcription_model, transcription_api_base=transcription_api_base,
            transcription_api_key_env=transcription_api_key_env, cache=bool(media_cache),
            timeout=float(option("inspect_file", "model_timeout", model_timeout, strict=True)))
        self._archive_notes: dict[str, list[str]] = {}
        self._cache: OrderedDict[tuple, tuple[str, str, list[str], tuple[int, ...]]] = OrderedDict()

    def _locate(self, files_dir: Path | None, name: str) -> Path | ToolResult:
        """The file `name` inside `files_dir`, or the error to reply with."""
        if files_dir is None:
            return ToolResult.error(NO_FILES, "this task has no attached files")
        if not name.strip():
            return ToolResult.error(BAD_ARGUMENTS, "path is empty; use '.' to list the task's files")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            return ToolResult.error(PATH_REFUSED, f"{name!r} is an absolute path; name a file relative to the "
                                                  f"task's files: {_listing(files_dir, files_dir)}")
        if ".." in re.split(r"[\\/]", name):
            return ToolResult.error(PATH_REFUSED, f"{name!r} contains '..'; only the task's own files can be read")
        base = files_dir.resolve()
        target = (base / name).resolve()
        if target != base and base not in target.parents:
            return ToolResult.error(PATH_REFUSED, f"{name!r} leads outside the task's files")
        if not target.exists():
            return ToolResult.error(NOT_FOUND, f"no file {name!r}; the task's files: {_listing(files_dir, files_dir)}")
        return target

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        name: str = arguments["path"]
        page: int = arguments.get("page", 1)
        if page < 1:
            return ToolResult.error(BAD_ARGUMENTS, f"page must be 1 or more, got {page}")
        try:
            located = await self._find(context.files_dir, name)
            if isinstance(located, ToolResult):
                return located
            if located.is_dir():
                assert context.files_dir is not None
                return ToolResult(f"The task's files: {_listing(located, context.files_dir)}")
            suffix = located.suffix.lower()
            if suffix in media.IMAGE_SUFFIXES:
                text, image, kind = await self.media.image(located, context.task.question, context.model,
                                                            timeout=self.timeout, memory_mb=self.memory_mb)
                if kind:
                    return ToolResult.error(kind, text)
                return ToolResult(text, images=(image,) if image else ())
            if suffix in media.AUDIO_SUFFIXES or suffix in media.VIDEO_SUFFIXES:
                text, kind = await self.media.transcribe(located)
                return ToolResult.error(kind, text) if kind else ToolResult(text)
            extra: list[str] = []
            if suffix == ".zip":
                try:
                    extra = await self._extract(located)  # so members can be read by path
                except Unreadable as exc:
                    if exc.kind != archive.ARCHIVE_REFUSED:
                        raise
                    extra = [str(exc)]  # the listing is still shown
            label, text, notes, starts = await self._rendered(located)
            notes = notes + extra
        except Unreadable as exc:
            return ToolResult.error(exc.kind, str(exc))
        except bounded.Overrun as exc:
            budget = (f"tools.inspect_file.timeout, {self.timeout:g} s" if exc.kind == TIMEOUT
                      else f"tools.inspect_file.memory_mb, {self.memory_mb:,} MB")
            return ToolResult.error(exc.kind, f"reading {name!r} was stopped: it {exc} ({budget}); the python tool "
                                              "can read parts of it")
        except bounded.WorkerFailed as exc:
            return ToolResult.error(READ_ERROR, f"{name!r} could not be read: {exc}")
        except OSError as exc:
            return ToolResult.error(READ_ERROR, f"{name!r} could not be read: {exc.strerror or exc}")
        n = len(starts)
        if page > n:
            return ToolResult.error(PAGE_OUT_OF_RANGE, f"{name!r} has {n} page(s); asked for page {page}")
        end = starts[page] if page < n else len(text)
        lines = [f"{located.name} ({label}, {located.stat().st_size:,} bytes), page {page} of {n}"]
        lines += [f"Note: {note}." for note in notes]
        lines += ["", text[starts[page - 1]:end].strip() or "(no text)"]
        if n > 1:
            lines += ["", f"[Page {page} of {n}" + (": end of file.]" if page == n else
                                                    f". For more, call inspect_file with page={page + 1}.]")]
        return ToolResult("\n".join(lines))

    async def aclose(self) -> None:
        """Close the response cache of the vision and speech-to-text models (the agent calls this at the end)."""
        await self.media.aclose()

    async def _find(self, files_dir: Path | None, name: str) -> Path | ToolResult:
        """`_locate`, and a path through a zip archive (`data.zip/sheet.csv`), which is extracted to reach it."""
        located = self._locate(files_dir, name)
        if not (isinstance(located, ToolResult) and located.error_kind == NOT_FOUND):
            return located
        assert files_dir is not None
        parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
        for i in range(1, len(parts)):
            prefix = files_dir.joinpath(*parts[:i])
            if prefix.suffix.lower() == ".zip" and prefix.is_file():  # `_locate` checked it stays inside
                await self._extract(prefix)
                return await self._find(archive.extracted_dir(prefix), "/".join(parts[i:]))
        return located

    async def _extract(self, path: Path) -> list[str]:
        """Extract the archive once (in a worker); the notes on members it skipped."""
        key = str(path)
        if key not in self._archive_notes:
            _count, notes = await bounded.run(archive.extract, path, self.zip_max_members, self.zip_max_mb << 20,
                                              timeout=self.timeout, memory_mb=self.memory_mb)
            self._archive_notes[key] = notes[:20] + ([f"{len(notes) - 20} more members skipped"] if len(notes) > 20
                                                     else [])
        return self._archive_notes[key]

    async def _rendered(self, path: Path) -> tuple[str, str, list[str], tuple[int, ...]]:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        entry = await bounded.run(render_paged, path, self.caps, self.page_chars, timeout=self.timeout,
                                  memory_mb=self.memory_mb)
        self._cache[key] = entry
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry
