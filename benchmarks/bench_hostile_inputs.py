"""Time and peak memory of visit_page and inspect_file on hostile pages and files (issue 13, parts 2 and 3).

    python benchmarks/bench_hostile_inputs.py                 # every case, the code in this checkout
    python benchmarks/bench_hostile_inputs.py --old           # the same cases on the last commit's tools
    python benchmarks/bench_hostile_inputs.py --case wide_csv --case gzip_bomb

Each case runs in a fresh process (address space capped at `--cap-gb`, killed after `--limit` s) that
builds its input in a temporary directory and calls the tool once with timeout=5 s. Printed per case:
wall seconds, the peak resident memory of the whole process tree (the case process, and for the new
code the worker helper and its workers, sampled every 10 ms), and the tool's error kind and notes.
visit_page cases are served by a web server on 127.0.0.1 in the case process; nothing leaves the machine.

Target: every case ends within timeout + 3 s and under 1.5 GB.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0


# --------------------------------------------------------------------------- hostile inputs


def gzip_bomb(gb: float) -> bytes:
    """`gb` GB of zeros, gzipped twice (send with Content-Encoding: gzip, gzip)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    inner = b"".join(z.compress(block) for _ in range(int(gb * 1024))) + z.flush()
    return gzip.compress(inner, 9)


def big_html(rows: int = 40_000) -> bytes:
    cells = "".join(f"<tr><td><a href='/r{i}'>row {i}</a></td><td><b>{i * 7}</b></td><td>text {i}</td></tr>"
                    for i in range(rows))
    return f"<html><body><h1>Big</h1><table>{cells}</table></body></html>".encode()


def deep_html(depth: int = 400) -> bytes:
    return ("<html><body>" + "<div><span>x</span>" * depth + "bottom" + "</div>" * depth + "</body></html>").encode()


def slow_pdf(operators: int = 300_000) -> bytes:
    """One page whose Flate-compressed content stream holds `operators` text-showing operators."""
    ops = b"BT /F1 12 Tf " + b"".join(b"1 0 0 1 %d %d Tm (w%d) Tj " % (i % 5 * 100, i % 7 * 100, i % 10)
                                     for i in range(operators)) + b"ET"
    stream = zlib.compress(ops, 9)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
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


def huge_dimension_xlsx(path: Path) -> None:
    """A two-cell workbook spanning the whole grid: A1 and XFD1048576 (so it declares A1:XFD1048576)."""
    import openpyxl
    wb = openpyxl.Workbook()
    wb.active["A1"], wb.active["XFD1048576"] = "first", "last"
    wb.save(path)


def many_paragraph_docx(path: Path, paragraphs: int = 60_000) -> None:
    import docx
    document = docx.Document()
    document.add_paragraph("seed")
    document.save(path)
    with zipfile.ZipFile(path) as src:
        items = [(i, src.read(i)) for i in src.infolist()]
    body = b"".join(b"<w:p><w:r><w:t>p%d</w:t></w:r></w:p>" % i for i in range(paragraphs))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item, data in items:
            if item.filename == "word/document.xml":
                at = data.index(b"<w:body>") + len(b"<w:body>")
                data = data[:at] + body + data[at:]
            dst.writestr(item, data)


def wide_csv(path: Path, columns: int = 200_000, rows: int = 500) -> None:
    """A header of `columns` one-letter names over `rows` short rows."""
    lines = [",".join("c" * columns)] + [f"{i},{i * 2}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- measuring


def tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 2**20


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            self.stop.wait(0.01)


def load_tools(old: bool):
    if not old:
        from bon.tools.files import InspectFile
        from bon.tools.web import VisitPage
        return VisitPage, InspectFile
    classes = []
    for rel, name in (("bon/tools/web.py", "VisitPage"), ("bon/tools/files.py", "InspectFile")):
        source = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
        module_name = "bon.tools._old_" + Path(rel).stem
        spec = importlib.util.spec_from_loader(module_name, loader=None)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        exec(compile(source, f"HEAD:{rel}", "exec"), module.__dict__)
        classes.append(getattr(module, name))
    return tuple(classes)


def serve(body: bytes, headers: dict[str, str]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


PAGES = {
    "gzip_bomb": lambda a: (gzip_bomb(a.bomb_gb), {"Content-Type": "text/html", "Content-Encoding": "gzip, gzip"}),
    "big_html": lambda a: (big_html(), {"Content-Type": "text/html"}),
    "deep_html": lambda a: (deep_html(), {"Content-Type": "text/html"}),
    "slow_pdf": lambda a: (slow_pdf(), {"Content-Type": "application/pdf"}),
}
FILES = {
    "huge_xlsx": ("book.xlsx", huge_dimension_xlsx),
    "many_paragraph_docx": ("long.docx", many_paragraph_docx),
    "wide_csv": ("wide.csv", wide_csv),
    "symlink_listing": ("link.txt", lambda p: p.symlink_to("/etc/hostname")),
}


def run_case(name: str, args: argparse.Namespace) -> dict:
    from bon.tools.base import ToolContext
    from bon.types import Task

    VisitPage, InspectFile = load_tools(args.old)
    context = ToolContext(Task("bench", "q"))
    with tempfile.TemporaryDirectory() as tmp:
        if name in PAGES:
            body, headers = PAGES[name](args)
            server = serve(body, headers)
            tool = VisitPage(allow_private=True, timeout=TIMEOUT)
            call = {"url": f"http://127.0.0.1:{server.server_address[1]}/page"}
            size = len(body)
        else:
            filename, build = FILES[name]
            files = Path(tmp)
            build(files / filename)
            kwargs = {} if args.old else {"timeout": TIMEOUT}
            tool = InspectFile(**kwargs)
            context = ToolContext(Task("bench", "q"), files_dir=files)
            call = {"path": "." if name == "symlink_listing" else filename}
            size = os.lstat(files / filename).st_size
        sampler = PeakSampler()
        sampler.start()
        start = time.perf_counter()
        result = asyncio.run(tool.call(call, context))
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    notes = [line for line in result.content.splitlines() if line.startswith("Note:")]
    return {"case": name, "input_bytes": size, "seconds": round(seconds, 2), "peak_rss_mb": round(sampler.peak),
            "error_kind": result.error_kind, "reply_chars": len(result.content),
            "notes": notes or result.content.splitlines()[:1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=[*PAGES, *FILES])
    parser.add_argument("--old", action="store_true", help="the tools as of the last commit (git show HEAD:...)")
    parser.add_argument("--bomb-gb", type=float, default=2.0)
    parser.add_argument("--limit", type=float, default=120.0, help="kill a case after this many seconds")
    parser.add_argument("--cap-gb", type=float, default=4.0, help="address-space cap of each case process")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args)))
        return 0
    cap = int(args.cap_gb * 2**30)
    ok = True
    for name in args.case or [*PAGES, *FILES]:
        command = [sys.executable, __file__, "--one", name, "--bomb-gb", str(args.bomb_gb)] + (["--old"] * args.old)
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.limit, cwd=ROOT,
                                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
            lines = done.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "case": name, "failed": (done.stderr.strip().splitlines() or ["?"])[-1][:200],
                "seconds": round(time.perf_counter() - start, 1)}
        except subprocess.TimeoutExpired:
            row = {"case": name, "failed": f"still running after {args.limit:g} s (killed)"}
        print(json.dumps(row))
        ok &= ("failed" not in row and row["seconds"] <= TIMEOUT + 3 and row["peak_rss_mb"] < 1536)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
