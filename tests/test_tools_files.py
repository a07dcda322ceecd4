"""inspect_file: every supported format from small files written here, paging, and confinement to the task's files."""
from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time
import zipfile
import zlib
from pathlib import Path

import docx
import openpyxl
import pytest
from pypdf import PdfReader

from bon.errors import BonError
from bon.tools.base import ToolContext, ToolResult
from bon.tools.files import InspectFile
from bon.types import Task

TASK = Task("t1", "question?")


def inspect(files_dir: Path | None, path: str, tool: InspectFile | None = None, **arguments) -> ToolResult:
    tool = tool or InspectFile()
    return asyncio.run(tool.call({"path": path, **arguments}, ToolContext(TASK, files_dir=files_dir)))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    return directory


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page, xref offsets computed."""
    n = len(pages)
    font = 3 + 2 * n
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(n))
               + b"] /Count %d >>" % n]
    for i, text in enumerate(pages):
        stream = b"BT /F1 12 Tf 20 100 Td (" + text.encode() + b") Tj ET"
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --------------------------------------------------------------------------- formats


def test_xlsx_every_sheet_as_a_table_with_row_numbers_and_column_letters(files: Path) -> None:
    wb = openpyxl.Workbook()
    sales = wb.active
    sales.title = "Sales"
    sales.append(["Name", "Amount", "Day"])
    sales.append(["Ann", 3.5, dt.datetime(2024, 1, 5)])
    sales.append(["Bob", 2.0, dt.datetime(2024, 1, 6, 14, 30)])
    sales["E6"] = "far cell"
    notes = wb.create_sheet("Notes")
    notes["A1"] = "pipe | inside"
    wb.create_sheet("Blank")
    wb.save(files / "book.xlsx")

    result = inspect(files, "book.xlsx")
    assert result.error_kind is None
    text = result.content
    assert text.index('## Sheet "Sales"') < text.index('## Sheet "Notes"') < text.index('## Sheet "Blank"')
    assert "| row | A | B | C | D | E |" in text
    assert "| 2 | Ann | 3.5 | 2024-01-05 |  |  |" in text  # a midnight datetime reads as a date
    assert "| 3 | Bob | 2 | 2024-01-06 14:30:00 |  |  |" in text  # a whole float without ".0"
    assert "| 6 |  |  |  |  | far cell |" in text  # the row number is Excel's, empty rows 4-5 skipped
    assert "| 1 | pipe \\| inside |" in text
    assert '## Sheet "Blank" (0 non-empty rows)\n\n(empty)' in text


def test_xlsx_rows_are_capped_with_a_count_of_the_rest(files: Path) -> None:
    wb = openpyxl.Workbook()
    for i in range(1, 11):
        wb.active.append([f"r{i}", i])
    wb.save(files / "long.xlsx")
    text = inspect(files, "long.xlsx", InspectFile(max_rows=4)).content
    assert "| 4 | r4 | 4 |" in text and "r5" not in text
    assert "6 more rows not shown" in text
    assert "(10 non-empty rows)" in text


def test_csv_and_tsv_as_tables(files: Path) -> None:
    (files / "t.csv").write_text('city,note\nParis,"a, b"\nRome,plain\nOslo,x\n', encoding="utf-8")
    (files / "t.tsv").write_text("k\tv\nalpha\t1\n", encoding="utf-8")
    text = inspect(files, "t.csv", InspectFile(max_rows=2)).content
    assert "3 data rows below a header row, 2 columns" in text
    assert "| city | note |\n|---|---|\n| Paris | a, b |\n| Rome | plain |" in text  # quoted comma kept in its cell
    assert "Oslo" not in text and "1 more rows not shown" in text
    assert "| k | v |\n|---|---|\n| alpha | 1 |" in inspect(files, "t.tsv").content


def test_docx_paragraphs_and_tables_in_document_order(files: Path) -> None:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Opening paragraph.")
    table = document.add_table(rows=2, cols=2)
    for (r, c), value in {(0, 0): "item", (0, 1): "count", (1, 0): "apples", (1, 1): "7"}.items():
        table.cell(r, c).text = value
    document.add_paragraph("Closing paragraph.")
    document.save(files / "r.docx")

    text = inspect(files, "r.docx").content
    assert "# Quarterly report" in text
    order = [text.index(s) for s in ("Opening paragraph.", "| item | count |", "| apples | 7 |", "Closing paragraph.")]
    assert order == sorted(order)


def test_pdf_text_of_each_page(files: Path) -> None:
    (files / "doc.pdf").write_bytes(minimal_pdf(["Hello from page one", "Second page text"]))
    assert len(PdfReader(files / "doc.pdf").pages) == 2  # the fixture itself is a valid PDF
    text = inspect(files, "doc.pdf").content
    assert "2 PDF page(s)" in text
    assert text.index("Hello from page one") < text.index("[PDF page 2 of 2]") < text.index("Second page text")


def test_zip_members_are_read_by_path_and_extracted_beside_the_archive(files: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as nested:
        nested.writestr("deep.txt", "found in the nested archive")
    with zipfile.ZipFile(files / "a.zip", "w") as archive:
        archive.writestr("inner/data.csv", "name,score\nada,7\n")
        archive.writestr("../escape.txt", "zip slip")
        archive.writestr("/abs.txt", "absolute")
        archive.writestr("nested.zip", inner.getvalue())
    listing = inspect(files, "a.zip")
    assert listing.error_kind is None and "inner/data.csv (17 bytes)" in listing.content
    assert "'../escape.txt' points outside the archive; skipped" in listing.content
    table = inspect(files, "a.zip/inner/data.csv")
    assert table.error_kind is None and "| ada | 7 |" in table.content
    assert "found in the nested archive" in inspect(files, "a.zip/nested.zip/deep.txt").content
    # extracted inside the task's directory (where the python tool's copy comes from), nothing outside it
    assert (files / "a.zip_extracted" / "inner" / "data.csv").read_text() == "name,score\nada,7\n"
    assert not (files.parent / "escape.txt").exists() and not Path("/abs.txt").exists()
    assert not (files / "escape.txt").exists()
    assert inspect(files, "a.zip/../escape.txt").error_kind == "path_refused"
    assert inspect(files, "a.zip/missing.txt").error_kind == "not_found"


def test_zip_bombs_and_oversized_archives_are_not_extracted(files: Path) -> None:
    with zipfile.ZipFile(files / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\x00" * (20 << 20))
    with zipfile.ZipFile(files / "many.zip", "w") as archive:
        for i in range(30):
            archive.writestr(f"f{i}.txt", "x")
    bomb = inspect(files, "bomb.zip/zeros.bin")
    assert bomb.error_kind == "archive_refused" and "zip bomb" in bomb.content
    listing = inspect(files, "bomb.zip")
    assert listing.error_kind is None and "zeros.bin" in listing.content and "not extracted" in listing.content
    many = inspect(files, "many.zip/f1.txt", InspectFile(zip_max_members=10))
    assert many.error_kind == "archive_refused" and "zip_max_members" in many.content
    big = inspect(files, "many.zip/f1.txt", InspectFile(zip_max_mb=1)).error_kind  # 30 bytes fit in 1 MB
    assert big is None
    assert sorted(p.name for p in files.iterdir()) == ["bomb.zip", "many.zip", "many.zip_extracted"]


def test_pptx_slides_tables_and_notes_in_order(files: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Quarterly results"
    first.placeholders[1].text = "Revenue grew"
    first.notes_slide.notes_text_frame.text = "Mention the 42 new stores"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "By region"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(4), Inches(2)).table
    for r, row in enumerate([("region", "stores"), ("north", "30"), ("south", "12")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    deck.save(files / "deck.pptx")
    text = inspect(files, "deck.pptx").content
    order = ["## Slide 1: Quarterly results", "Revenue grew", "Speaker notes:\nMention the 42 new stores",
             "## Slide 2: By region", "| region | stores |", "| south | 12 |"]
    positions = [text.find(part) for part in order]
    assert -1 not in positions and positions == sorted(positions), text
    capped = inspect(files, "deck.pptx", InspectFile(max_paragraphs=3)).content
    assert "only 1 of 2 slides were read" in capped and "By region" not in capped


def test_text_json_html_and_unknown_types(files: Path) -> None:
    (files / "notes.md").write_text("# Title\nsome *notes*\n", encoding="utf-8")
    (files / "d.json").write_text('{"b": [1, 2], "name": "café"}', encoding="utf-8")
    (files / "page.html").write_text("<html><head><script>steal()</script></head><body><h2>Heading</h2>"
                                     "<p>Body <b>bold</b></p></body></html>", encoding="utf-8")
    (files / "readme.weird").write_text("plain UTF-8 text, odd suffix", encoding="utf-8")
    (files / "blob.bin").write_bytes(bytes(range(256)))

    assert "some *notes*" in inspect(files, "notes.md").content
    assert json.dumps({"b": [1, 2], "name": "café"}, indent=2, ensure_ascii=False) in inspect(files, "d.json").content
    html = inspect(files, "page.html").content
    assert "## Heading" in html and "Body **bold**" in html and "steal" not in html
    assert "plain UTF-8 text, odd suffix" in inspect(files, "readme.weird").content
    binary = inspect(files, "blob.bin")
    assert binary.error_kind == "unsupported_file"
    assert "xlsx" in binary.content and "pdf" in binary.content  # says what is supported


def test_long_output_is_paged(files: Path) -> None:
    lines = [f"line {i:04d} " + "x" * 40 for i in range(200)]
    (files / "long.txt").write_text("\n".join(lines), encoding="utf-8")
    tool = InspectFile(page_chars=1000)
    first = inspect(files, "long.txt", tool)
    n = int(first.content.split("\n", 1)[0].rsplit(" of ", 1)[1])
    assert n > 5 and "call inspect_file with page=2" in first.content
    seen = "\n".join(inspect(files, "long.txt", tool, page=p).content for p in range(1, n + 1))
    assert all(line in seen for line in lines)  # the pages cover the file, no line cut in two
    last = inspect(files, "long.txt", tool, page=n).content
    assert f"page {n} of {n}" in last and "end of file" in last
    beyond = inspect(files, "long.txt", tool, page=n + 1)
    assert beyond.error_kind == "page_out_of_range" and f"has {n} page(s)" in beyond.content


def test_dot_lists_the_files(files: Path) -> None:
    (files / "a.txt").write_text("abc", encoding="utf-8")
    result = inspect(files, ".")
    assert result.error_kind is None and "a.txt (3 bytes)" in result.content


# --------------------------------------------------------------------------- confinement


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "..\\x", "C:\\Windows\\win.ini"])
def test_paths_outside_are_refused(files: Path, path: str) -> None:
    (files / "ok.txt").write_text("fine", encoding="utf-8")
    (files.parent / "x").write_text("outside secret", encoding="utf-8")
    result = inspect(files, path)
    assert result.error_kind == "path_refused"
    assert "outside secret" not in result.content and "root:" not in result.content


def test_symlink_leading_outside_is_refused(files: Path) -> None:
    secret = files.parent / "secret.txt"
    secret.write_text("outside secret", encoding="utf-8")
    (files / "link.txt").symlink_to(secret)
    (files / "dirlink").symlink_to(files.parent, target_is_directory=True)
    for path in ("link.txt", "dirlink/secret.txt"):
        result = inspect(files, path)
        assert result.error_kind == "path_refused", path
        assert "outside secret" not in result.content


def test_no_files_dir_means_no_attached_files() -> None:
    result = inspect(None, "data.xlsx")
    assert result.error_kind == "no_files" and "no attached files" in result.content


def test_missing_file_lists_the_available_names(files: Path) -> None:
    (files / "data.xlsx").write_bytes(b"x" * 10)
    (files / "notes.txt").write_text("hi", encoding="utf-8")
    result = inspect(files, "dat.xlsx")
    assert result.error_kind == "not_found"
    assert "data.xlsx (10 bytes)" in result.content and "notes.txt (2 bytes)" in result.content


def test_damaged_file_is_a_read_error(files: Path) -> None:
    (files / "broken.xlsx").write_bytes(b"not really a workbook")
    (files / "broken.zip").write_bytes(b"PK nope")
    assert inspect(files, "broken.xlsx").error_kind == "read_error"
    assert inspect(files, "broken.zip").error_kind == "read_error"


@pytest.mark.parametrize("options, name", [({"page_chars": 10}, "page_chars"), ({"max_rows": 0}, "max_rows"),
                                           ({"page_chars": "big"}, "page_chars")])
def test_bad_options_name_the_option(options: dict, name: str) -> None:
    with pytest.raises(BonError, match=f"tools.inspect_file.{name}"):
        InspectFile(**options)


# --------------------------------------------------------------------------- hostile files: bounded reading


def test_xlsx_spanning_the_whole_grid_is_read_up_to_the_cell_budget(files: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active["A1"], wb.active["B1"], wb.active["XFD1048576"] = "first", "second", "last"
    wb.save(files / "grid.xlsx")
    with zipfile.ZipFile(files / "grid.xlsx") as archive:  # the fixture declares the whole sheet
        assert b'<dimension ref="A1:XFD1048576"/>' in archive.read("xl/worksheets/sheet1.xml")
    result = inspect(files, "grid.xlsx", InspectFile(max_cells=10_000, timeout=60))
    assert result.error_kind is None, result.content
    assert "| 1 | first | second |" in result.content
    assert "reading stopped in sheet" in result.content and "tools.inspect_file.max_cells" in result.content
    assert "at least 1 non-empty rows" in result.content and "| 1048576 |" not in result.content


def test_xlsx_columns_past_the_cap_are_not_read(files: Path) -> None:
    wb = openpyxl.Workbook()
    wb.active.append([f"v{i}" for i in range(1, 31)])
    wb.save(files / "wide.xlsx")
    text = inspect(files, "wide.xlsx", InspectFile(max_columns=5)).content
    assert "| row | A | B | C | D | E |" in text and "| 1 | v1 | v2 | v3 | v4 | v5 |" in text
    assert "v6" not in text and "only the first 5 columns were read" in text


def _docx_with_paragraphs(path: Path, n: int) -> None:
    """A docx whose body holds `n` paragraphs, written as XML (python-docx would take minutes)."""
    document = docx.Document()
    document.add_paragraph("seed")
    document.save(path)
    with zipfile.ZipFile(path) as source:
        items = [(info, source.read(info)) for info in source.infolist()]
    body = b"".join(b"<w:p><w:r><w:t>para %d</w:t></w:r></w:p>" % i for i in range(n))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in items:
            if info.filename == "word/document.xml":
                at = data.index(b"<w:body>") + len(b"<w:body>")
                data = data[:at] + body + data[at:]
            target.writestr(info, data)


def test_docx_paragraphs_past_the_cap_are_not_read(files: Path) -> None:
    _docx_with_paragraphs(files / "long.docx", 60_000)
    assert (files / "long.docx").stat().st_size < 200_000
    result = inspect(files, "long.docx", InspectFile(max_paragraphs=300))
    assert result.error_kind is None, result.content
    assert "para 0\n" in result.content and "para 299" in result.content and "para 300" not in result.content
    assert "only the first 300 of about 60,00" in result.content and "tools.inspect_file.max_paragraphs" in result.content


def test_csv_with_a_huge_header_reads_only_max_columns(files: Path) -> None:
    header = ",".join(f"h{i}" for i in range(200_000))
    (files / "wide.csv").write_text(header + "\n" + "\n".join(f"{i},{i * 2}" for i in range(300)) + "\n",
                                    encoding="utf-8")
    tool = InspectFile(max_columns=20)
    result = inspect(files, "wide.csv", tool)
    assert result.error_kind is None, result.content
    assert "300 data rows below a header row, 200,000 columns" in result.content
    assert "the table has 200,000 columns; only the first 20 were read" in result.content
    assert "| h19 |" in result.content and "h20" not in result.content
    pages = int(result.content.split("\n", 1)[0].rsplit(" of ", 1)[1])
    assert pages <= 5  # 300 rows of 20 short cells, not 300 x 200,000


def test_csv_rows_past_the_cell_budget_are_not_counted(files: Path) -> None:
    (files / "long.csv").write_text("a,b\n" + "".join(f"{i},x\n" for i in range(1000)), encoding="utf-8")
    text = inspect(files, "long.csv", InspectFile(max_rows=3, max_cells=202)).content
    assert "at least 100 data rows" in text and "at least 97 more rows not shown" in text
    assert "reading stopped at data row 101" in text


def _slow_pdf(operators: int = 300_000) -> bytes:
    """One page whose compressed content stream holds `operators` text operators: slow to extract."""
    ops = b"BT /F1 12 Tf " + b"1 0 0 1 10 10 Tm (w) Tj " * operators + b"ET"
    stream = zlib.compress(ops, 9)
    head = minimal_pdf(["x"])
    # swap the page's content stream for the compressed one (offsets recomputed by building anew)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 200] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(head[:9])
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_parsing_past_the_time_budget_is_stopped_as_timeout(files: Path) -> None:
    (files / "slow.pdf").write_bytes(_slow_pdf())
    start = time.monotonic()
    result = inspect(files, "slow.pdf", InspectFile(timeout=1.0))
    assert result.error_kind == "timeout", result.content[:300]
    assert "tools.inspect_file.timeout" in result.content
    assert time.monotonic() - start < 1.0 + 10  # stopped, not run to the end (a behaviour check, not a benchmark)


def test_the_listing_never_follows_a_link_out(files: Path) -> None:
    secret = files.parent / "big_secret.bin"
    secret.write_bytes(b"s" * 12345)
    (files / "link.bin").symlink_to(secret)
    (files / "ok.txt").write_text("abc", encoding="utf-8")
    (files / "inner.txt").symlink_to(files / "ok.txt")  # a link that stays inside is fine
    text = inspect(files, ".").content
    assert "12,345" not in text
    assert "link.bin (a link leading outside the task's files; not readable)" in text
    assert "ok.txt (3 bytes)" in text and "inner.txt (3 bytes)" in text


def test_deep_html_and_json_files_are_read(files: Path) -> None:
    (files / "deep.html").write_text("<p>top</p>" + "<div>" * 2000 + "bottom" + "</div>" * 2000, encoding="utf-8")
    (files / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    html = inspect(files, "deep.html")
    assert html.error_kind is None and "bottom" in html.content and "plain text" in html.content
    deep = inspect(files, "deep.json")
    assert deep.error_kind is None and "nested too deeply to lay out" in deep.content


@pytest.mark.parametrize("options, name", [({"max_columns": 0}, "max_columns"), ({"max_cells": 0}, "max_cells"),
                                           ({"max_paragraphs": 0}, "max_paragraphs"), ({"timeout": 0}, "timeout"),
                                           ({"memory_mb": 16}, "memory_mb")])
def test_bad_bound_options_name_the_option(options: dict, name: str) -> None:
    with pytest.raises(BonError, match=f"tools.inspect_file.{name}"):
        InspectFile(**options)
