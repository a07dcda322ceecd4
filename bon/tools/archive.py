"""Safe extraction of an attached zip archive, so its members can be read like any attached file.

Archives are untrusted: a member named `../../etc/x` or `/etc/x` (zip slip), a symlink member, a
billion tiny members or a few kilobytes that inflate to gigabytes (a bomb) must not escape or fill
the task's directory. `extract` refuses archives with more than `max_members` members or more than
`max_bytes` declared in total, refuses any member compressed more than `MAX_RATIO` times, counts the
bytes actually written (declared sizes can lie) and stops past `max_bytes`, and skips links and
encrypted members. It writes into a fresh hidden directory and renames it into place at the end, so
concurrent samples of a task never see half an archive. It runs in inspect_file's bounded worker.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

ARCHIVE_REFUSED = "archive_refused"  # too many members, too large, or a bomb
MAX_RATIO = 200  # uncompressed / compressed size past which a member (over RATIO_FLOOR bytes) is a bomb
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 16


def extracted_dir(archive: Path) -> Path:
    """Where the members of `archive` are extracted: a folder beside it (`data.zip` -> `data.zip_extracted`)."""
    return archive.with_name(archive.name + "_extracted")


def _safe_parts(name: str) -> list[str] | None:
    """The member's path components, or None when it is absolute or climbs out (zip slip)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return parts


def extract(archive: Path, max_members: int, max_bytes: int) -> tuple[int, list[str]]:
    """Extract `archive` into `extracted_dir(archive)` unless already there; (files written, notes).

    Raises `files.Unreadable` (kind ARCHIVE_REFUSED or read_error) for an archive it will not extract.
    """
    from bon.tools.files import READ_ERROR, Unreadable

    dest = extracted_dir(archive)
    if dest.is_dir():
        return sum(1 for p in dest.rglob("*") if p.is_file()), []
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise Unreadable(READ_ERROR, f"{archive.name} is not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise Unreadable(ARCHIVE_REFUSED, f"{archive.name} has {len(infos):,} members, more than "
                                              f"tools.inspect_file.zip_max_members ({max_members:,}); not extracted")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise Unreadable(ARCHIVE_REFUSED, f"{archive.name} would expand to {declared:,} bytes, more than "
                                              f"tools.inspect_file.zip_max_mb ({max_bytes >> 20:,} MB); not extracted")
        for info in infos:
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise Unreadable(ARCHIVE_REFUSED, f"{archive.name}: member {info.filename!r} is compressed "
                                                  f"{info.file_size // max(info.compress_size, 1):,} times (more than "
                                                  f"{MAX_RATIO}: a zip bomb?); not extracted")
        work = Path(tempfile.mkdtemp(prefix=".extracting-", dir=archive.parent))
        try:
            written, files, notes = 0, 0, []
            for info in infos:
                parts = _safe_parts(info.filename)
                if not parts:
                    if parts is None:
                        notes.append(f"member {info.filename!r} points outside the archive; skipped")
                    continue
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    notes.append(f"member {info.filename!r} is a link; skipped")
                    continue
                if info.flag_bits & 0x1:
                    notes.append(f"member {info.filename!r} is encrypted; skipped")
                    continue
                target = work.joinpath(*parts)
                try:
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as source, open(target, "xb") as out:  # "x": a repeated name is not overwritten
                        while chunk := source.read(_CHUNK):
                            written += len(chunk)
                            if written > max_bytes:
                                raise Unreadable(ARCHIVE_REFUSED, f"{archive.name} expands past "
                                                                  f"tools.inspect_file.zip_max_mb ({max_bytes >> 20:,} "
                                                                  "MB); not extracted")
                            out.write(chunk)
                    files += 1
                except (OSError, zipfile.BadZipFile, EOFError) as exc:  # a repeated name, a damaged member
                    notes.append(f"member {info.filename!r} could not be extracted ({exc}); skipped")
            try:
                os.rename(work, dest)
            except OSError:  # another sample extracted it meanwhile: theirs is as good as ours
                if not dest.is_dir():
                    raise
                shutil.rmtree(work, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return files, notes
