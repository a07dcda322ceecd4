"""PowerPoint (pptx) as text for `inspect_file`: each slide's title, text, tables and speaker notes, in order.

Runs inside inspect_file's bounded worker; reading stops at `Caps.max_paragraphs` paragraphs (text
paragraphs, table rows and notes together) and `Caps.max_cells` table cells, with a note saying so.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bon.tools.files import Caps, _CellBudget, _columns_note, _markdown_table, _more_rows


def _shapes(shapes: Any) -> Iterator[Any]:
    """The slide's shapes in document order, groups opened."""
    for shape in shapes:
        if getattr(shape, "shapes", None) is not None and not getattr(shape, "has_text_frame", False):
            yield from _shapes(shape.shapes)  # a group shape
        else:
            yield shape


def _is_title(shape: Any) -> bool:
    if not getattr(shape, "is_placeholder", False):
        return False
    try:
        kind = str(shape.placeholder_format.type)
    except (ValueError, AttributeError):
        return False
    return "TITLE" in kind and "SUB" not in kind


class _Reader:
    """Counts paragraphs against the cap while a deck is read."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self.budget = _CellBudget(caps)
        self.read = 0
        self.notes: list[str] = []

    @property
    def full(self) -> bool:
        return self.read >= self.caps.max_paragraphs or self.budget.left < 0

    def text(self, frame: Any) -> list[str]:
        lines = []
        for paragraph in frame.paragraphs:
            if self.full:
                break
            self.read += 1
            line = "".join(run.text for run in paragraph.runs) if paragraph.runs else paragraph.text
            line = line.strip()
            if line:
                lines.append("  " * (paragraph.level or 0) + line)
        return lines

    def table(self, table: Any) -> str:
        rows: list[list[str]] = []
        width, total = 0, len(table.rows)
        for row in table.rows:
            if len(rows) > self.caps.max_rows or self.full:
                break
            self.read += 1
            cells = list(row.cells)
            width = max(width, len(cells))
            if not self.budget.take(min(len(cells), self.caps.max_columns)):
                self.notes.append(self.budget.note("in a table"))
                break
            rows.append([cell.text.strip() for cell in cells[:self.caps.max_columns]])
        if not rows:
            return ""
        self.notes += _columns_note(width, self.caps, "a table")
        shown = max(len(r) for r in rows)
        header = rows[0] + [""] * (shown - len(rows[0]))
        return _markdown_table(header, rows[1:]) + _more_rows(len(rows) - 1, total - 1)


def render_pptx(path: Path, caps: Caps) -> tuple[str, list[str]]:
    """(text, notes): one `## Slide n` section per slide, then its text, tables and speaker notes."""
    from pptx import Presentation

    deck = Presentation(str(path))
    reader = _Reader(caps)
    slides = list(deck.slides)
    parts = []
    for number, slide in enumerate(slides, 1):
        if reader.full:
            reader.notes.append(f"only {number - 1} of {len(slides)} slides were read: the paragraph cap "
                                f"(tools.inspect_file.max_paragraphs, {caps.max_paragraphs:,}) or cell cap was "
                                "reached; use the python tool (python-pptx) for the rest")
            break
        reader.read += 1  # a slide counts as a paragraph: ten thousand empty slides are work too
        hidden = " (hidden)" if slide._element.get("show") in ("0", "false") else ""
        title, body, pictures = "", [], 0
        for shape in _shapes(slide.shapes):
            if reader.full:
                break
            if getattr(shape, "has_table", False) and shape.has_table:
                table = reader.table(shape.table)
                if table:
                    body.append(table)
            elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                lines = reader.text(shape.text_frame)
                if lines and not title and _is_title(shape):
                    title = " ".join(line.strip() for line in lines)
                elif lines:
                    body.append("\n".join(lines))
            elif shape.shape_type is not None and "PICTURE" in str(shape.shape_type):
                pictures += 1
        section = [f"## Slide {number}{': ' + title if title else ''}{hidden}"]
        section += body
        if pictures:
            section.append(f"({pictures} picture(s); their content is not shown)")
        if slide.has_notes_slide and not reader.full:
            notes = reader.text(slide.notes_slide.notes_text_frame) if slide.notes_slide.notes_text_frame else []
            if notes:
                section.append("Speaker notes:\n" + "\n".join(notes))
        if len(section) == 1:
            section.append("(no text)")
        parts.append("\n\n".join(section))
    return "\n\n".join(parts) or "(the presentation has no slides)", [f"{len(slides)} slide(s)"] + reader.notes
