"""Write bon's built-in GAIA-style task set: bon/datasets/builtin_tasks/{tasks.jsonl, files/}.

Run once (`python experiments/make_builtin_tasks.py`); the output is committed. Every table is drawn
from a seeded generator, every reference answer is computed here from the same data, and
tests/test_builtin.py recomputes each answer by reading the written attachment back, so a
mistake in either place shows up as a mismatch. Answers follow GAIA's format: a number without
units or thousands separators, a few words, or a comma-separated list in the order the question asks.

PDFs are written by hand (one Helvetica text stream per page): no PDF-writing library is a dependency.
"""
from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import math
import random
import statistics
from pathlib import Path

import docx
import openpyxl

OUT = Path(__file__).resolve().parents[1] / "bon" / "datasets" / "builtin_tasks"
FILES = OUT / "files"
FIXED_TIME = dt.datetime(2026, 1, 1)


# --------------------------------------------------------------------------- writers


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def write_pdf(path: Path, pages: list[list[str]]) -> None:
    """A minimal valid PDF: one page per list of lines, Helvetica 11 pt, with a correct xref table."""
    objects: list[bytes] = []
    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, lines in enumerate(pages):
        body = ["BT", "/F1 11 Tf", "14 TL", "56 780 Td"]
        for line in lines:
            body.append(f"{_pdf_string(line)} Tj T*")
        body.append("ET")
        stream = "\n".join(body).encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {page_ids[i] + 1} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    path.write_bytes(out.getvalue())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_xlsx(path: Path, sheets: dict[str, tuple[list[str], list[list]]]) -> None:
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, (header, rows) in sheets.items():
        ws = wb.create_sheet(name)
        ws.append(header)
        for row in rows:
            ws.append(row)
    wb.properties.created = wb.properties.modified = FIXED_TIME
    wb.save(path)


def new_docx() -> docx.document.Document:
    d = docx.Document()
    d.core_properties.created = d.core_properties.modified = FIXED_TIME
    return d


def add_table(d: docx.document.Document, header: list[str], rows: list[list]) -> None:
    table = d.add_table(rows=1, cols=len(header))
    for cell, text in zip(table.rows[0].cells, header):
        cell.text = text
    for row in rows:
        cells = table.add_row().cells
        for cell, value in zip(cells, row):
            cell.text = str(value)


def number(x: float, places: int | None = None) -> str:
    """GAIA's number format: no thousands separator, no trailing zeros beyond what is asked."""
    if places is not None:
        x = round(x, places)
        if places == 0:
            return str(int(x))
    return f"{x:.10g}" if isinstance(x, float) and not x.is_integer() else str(int(x))


def not_a_tie(x: float, places: int) -> float:
    """Refuse data whose rounding would hinge on a half (the test must not depend on round-half-even)."""
    scaled = abs(x) * 10 ** places
    assert abs(scaled - math.floor(scaled) - 0.5) > 1e-6, f"{x} sits on a rounding tie"
    return x


# --------------------------------------------------------------------------- tasks with files


def orders(rng: random.Random) -> list[dict]:
    products = {"Desk lamp": 34, "Office chair": 189, "Monitor arm": 72, "Keyboard": 58, "Webcam": 96}
    regions = ["North", "South", "East", "West"]
    rows = []
    for i in range(1, 121):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(182))
        product = rng.choice(list(products))
        units = rng.randint(1, 25)
        price = products[product] + rng.choice([0, 0, 0, -5, 5])  # occasional discount or surcharge
        rows.append([f"SO-{1000 + i}", day.isoformat(), rng.choice(regions), product, units, price])
    rows.sort(key=lambda r: (r[1], r[0]))
    write_csv(FILES / "orders.csv", ["order_id", "date", "region", "product", "units", "unit_price"], rows)
    east_march = sum(r[4] * r[5] for r in rows if r[2] == "East" and r[1].startswith("2024-03"))
    q2_units: dict[str, int] = {}
    for r in rows:
        if "2024-04" <= r[1][:7] <= "2024-06":
            q2_units[r[3]] = q2_units.get(r[3], 0) + r[4]
    best = sorted(q2_units.items(), key=lambda kv: -kv[1])
    assert best[0][1] > best[1][1], "Q2 best seller must be unique"
    return [
        {"question": "The attached orders.csv lists sales orders. What was the total revenue (units times unit price) "
                     "of the East region in March 2024, in dollars?",
         "answer": number(east_march), "file_name": "orders.csv"},
        {"question": "According to the attached orders.csv, which product sold the most units in total across all "
                     "regions in the second quarter (April to June) of 2024? Give the product name as written in the file.",
         "answer": best[0][0], "file_name": "orders.csv"},
    ]


def inventory(rng: random.Random) -> list[dict]:
    skus = [f"SKU-{n}" for n in rng.sample(range(100, 999), 14)]
    names = ["bolt M6", "bolt M8", "washer 6mm", "washer 8mm", "hinge small", "hinge large", "bracket L",
             "bracket T", "castor 50mm", "castor 75mm", "handle chrome", "handle black", "latch", "spring clip"]
    costs = {s: round(rng.uniform(0.2, 30.0), 2) for s in skus}
    stock = []
    for s, name in zip(skus, names):
        for wh in rng.sample(["Leeds", "Bristol", "Glasgow"], rng.randint(1, 3)):
            stock.append([s, name, wh, rng.randint(10, 900)])
    rng.shuffle(stock)
    price_rows = sorted([[s, costs[s]] for s in skus])
    write_xlsx(FILES / "inventory.xlsx", {"Stock": (["sku", "item", "warehouse", "quantity"], stock),
                                          "Costs": (["sku", "unit_cost_gbp"], price_rows)})
    leeds = not_a_tie(sum(q * costs[s] for s, _, wh, q in stock if wh == "Leeds"), 2)
    return [{"question": "The attached workbook inventory.xlsx has a Stock sheet and a Costs sheet. What is the total "
                         "value in pounds (quantity times unit cost) of all stock held in the Leeds warehouse? "
                         "Round to two decimal places.",
             "answer": number(leeds, 2), "file_name": "inventory.xlsx"}]


def staff(rng: random.Random) -> list[dict]:
    first = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam",
             "Mei", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Viktor"]
    last = ["Okafor", "Lindqvist", "Moreau", "Patel", "Yilmaz", "Haddad", "Kowalski", "Brennan", "Silva", "Weber",
            "Adeyemi", "Murphy", "Chen", "Berg", "Rahman", "Novak", "Duarte", "Ferreira", "Kaya", "Holm", "Iyer", "Sokolov"]
    depts = ["Engineering", "Sales", "Finance", "Engineering", "Support"]
    people = []
    for f, l in zip(first, last):
        hired = dt.date(2014, 1, 1) + dt.timedelta(days=rng.randrange(365 * 10))
        people.append({"name": f"{f} {l}", "department": rng.choice(depts),
                       "salary": rng.randrange(42000, 128000, 500), "hired": hired.isoformat()})
    (FILES / "staff.json").write_text(json.dumps({"company": "Northwind Tools", "employees": people}, indent=2) + "\n")
    eng = sorted(p["salary"] for p in people if p["department"] == "Engineering" and p["hired"] < "2020-01-01")
    assert len(eng) >= 3
    return [{"question": "The attached staff.json lists a company's employees. What is the median salary of the "
                         "Engineering employees hired before 1 January 2020?",
             "answer": number(statistics.median(eng)), "file_name": "staff.json"}]


def quarterly_pdf(rng: random.Random) -> list[dict]:
    rev = {(y, q): round(rng.uniform(3.2, 6.4), 2) for y in (2022, 2023) for q in (1, 2, 3, 4)}
    page1 = ["Harbour Analytics - Annual Review", "", "1. Summary",
             "This review covers the financial years 2022 and 2023. Figures are unaudited.",
             "Revenue is reported per quarter in millions of euros on the next page.", "",
             "2. Headcount", "Average headcount rose from 212 in 2022 to 236 in 2023."]
    page2 = ["3. Revenue by quarter (EUR million)", ""]
    for y in (2022, 2023):
        for q in (1, 2, 3, 4):
            page2.append(f"Q{q} {y} revenue: {rev[(y, q)]:.2f}")
    page2 += ["", "Quarterly figures include one-off licence income."]
    write_pdf(FILES / "annual_review.pdf", [page1, page2])
    t22 = sum(rev[(2022, q)] for q in range(1, 5))
    t23 = sum(rev[(2023, q)] for q in range(1, 5))
    growth = not_a_tie(100 * (t23 - t22) / t22, 1)
    return [{"question": "By what percentage did total revenue in 2023 differ from total revenue in 2022, according to "
                        "the attached annual_review.pdf? Give the change as a percentage of the 2022 total, rounded "
                        "to one decimal place (negative if revenue fell), without the % sign.",
             "answer": number(growth, 1), "file_name": "annual_review.pdf"}]


def minutes_docx(rng: random.Random) -> list[dict]:
    owners = ["Priya Nair", "Tom Becker", "Lucia Romano", "Priya Nair", "Sven Aalto"]
    actions = ["Update the risk register", "Book the venue", "Draft the supplier letter", "Review the Q3 forecast",
               "Renew the software licences", "Collect the survey results", "Fix the intranet search",
               "Prepare the board pack", "Archive the 2019 contracts", "Call the auditors", "Order new badges",
               "Test the backup restore"]
    rows = []
    for i, action in enumerate(actions, 1):
        due = dt.date(2025, 3, 1) + dt.timedelta(days=rng.randrange(60))
        rows.append([str(i), action, rng.choice(owners), due.isoformat(), rng.choice(["open", "done", "open", "blocked"])])
    d = new_docx()
    d.add_heading("Operations meeting - 12 February 2025", level=1)
    d.add_paragraph("Present: Priya Nair, Tom Becker, Lucia Romano, Sven Aalto. Apologies: none.")
    d.add_paragraph("The meeting reviewed progress since January. Items marked done were confirmed by their owners; "
                    "blocked items count as still open.")
    d.add_heading("Action items", level=2)
    add_table(d, ["#", "Action", "Owner", "Due", "Status"], rows)
    d.add_paragraph("Next meeting: 12 March 2025.")
    d.save(FILES / "minutes.docx")
    count = sum(1 for r in rows if r[2] == "Priya Nair" and r[4] != "done")
    return [{"question": "How many action items in the attached minutes.docx are owned by Priya Nair and not yet done? "
                         "The minutes say how blocked items count.",
             "answer": number(count), "file_name": "minutes.docx"}]


def server_log(rng: random.Random) -> list[dict]:
    ips = [f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}" for _ in range(30)]
    paths = ["/", "/login", "/api/items", "/api/items/42", "/static/app.js", "/api/orders"]
    start = dt.datetime(2025, 5, 4, 9, 0, 0)
    lines, errors = [], set()
    for i in range(240):
        t = start + dt.timedelta(seconds=17 * i + rng.randrange(15))
        ip = rng.choice(ips)
        status = rng.choices([200, 200, 200, 304, 404, 500], k=1)[0]
        if status == 500:
            errors.add(ip)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S} {ip} {rng.choice(['GET', 'GET', 'POST'])} {rng.choice(paths)} "
                     f"{status} {rng.randint(120, 9000)}B")
    (FILES / "server_log.txt").write_text("# timestamp client method path status bytes\n" + "\n".join(lines) + "\n")
    return [{"question": "In the attached server_log.txt, how many distinct client IP addresses received at least one "
                         "response with HTTP status 500?",
             "answer": number(len(errors)), "file_name": "server_log.txt"}]


def exams(rng: random.Random) -> list[dict]:
    students = ["Abbott", "Barros", "Castillo", "Dimitrov", "Eze", "Fischer", "Gupta", "Hansen", "Ito", "Jansen",
                "Khan", "Lopez", "Mensah", "Nakamura", "Olsen", "Petrov", "Quispe", "Rossi"]
    rows = [[s, rng.randint(60, 100), rng.randint(55, 100), rng.randint(60, 100)] for s in students]
    rng.shuffle(rows)
    write_csv(FILES / "exam_scores.csv", ["student", "exam1", "exam2", "exam3"], rows)
    good = sorted(r[0] for r in rows if sum(r[1:]) / 3 >= 85)
    assert 2 <= len(good) <= 8
    return [{"question": "Which students in the attached exam_scores.csv have an average of at least 85 over the three "
                         "exams? Give their names in alphabetical order, separated by commas.",
             "answer": ", ".join(good), "file_name": "exam_scores.csv"}]


def rainfall(rng: random.Random) -> list[dict]:
    stations = ["Aberdeen", "Cardiff", "Norwich", "Plymouth", "York"]
    means = [6.0, 5.0, 3.5, 6.5, 4.5]  # wetter and drier stations
    rows = []
    for day in range(1, 31):
        rows.append([dt.date(2024, 11, day)] + [round(max(0.0, rng.gauss(m, 6)), 1) for m in means])
    write_xlsx(FILES / "rainfall.xlsx", {"November 2024": (["date"] + [f"{s} (mm)" for s in stations], rows)})
    wet = {s: sum(1 for r in rows if r[1 + i] > 10) for i, s in enumerate(stations)}
    ranked = sorted(wet.items(), key=lambda kv: -kv[1])
    assert ranked[0][1] > ranked[1][1], "the wettest station must be unique"
    return [{"question": "The attached rainfall.xlsx holds daily rainfall for five weather stations. Which station had "
                         "the most days with more than 10 mm of rain?",
             "answer": ranked[0][0], "file_name": "rainfall.xlsx"}]


def trip(rng: random.Random) -> list[dict]:
    towns = ["Lyon", "Valence", "Avignon", "Nimes", "Montpellier", "Beziers", "Narbonne", "Perpignan"]
    legs = []
    for a, b in zip(towns, towns[1:]):
        legs.append({"from": a, "to": b, "distance_km": round(rng.uniform(25, 120), 1),
                     "driving_minutes": rng.randint(20, 95), "stop_minutes": rng.randint(0, 40)})
    (FILES / "road_trip.json").write_text(json.dumps({"vehicle": "campervan", "legs": legs}, indent=2) + "\n")
    km = sum(l["distance_km"] for l in legs)
    hours = sum(l["driving_minutes"] for l in legs) / 60
    speed = not_a_tie(km / hours, 1)
    return [{"question": "Using the attached road_trip.json, what was the average driving speed over the whole trip in "
                         "km/h (total distance divided by total driving time, stops excluded)? Round to one decimal place.",
             "answer": number(speed, 1), "file_name": "road_trip.json"}]


def recipe(_: random.Random) -> list[dict]:
    text = ("Oat and apple bars (makes 16 bars)\n\n"
            "Ingredients\n- 240 g rolled oats\n- 180 g plain flour\n- 150 g butter\n- 120 g brown sugar\n"
            "- 2 apples, grated\n- 1 tsp cinnamon\n\n"
            "Method\n1. Heat the oven to 180 C.\n2. Melt the butter with the sugar.\n"
            "3. Stir in the oats, flour, apples and cinnamon.\n4. Press into a tin and bake for 25 minutes.\n")
    (FILES / "recipe.txt").write_text(text)
    oats_plus_flour = (240 + 180) * 40 / 16
    return [{"question": "The attached recipe.txt makes 16 bars. How many grams of oats and flour together are needed "
                         "to make 40 bars?",
             "answer": number(oats_plus_flour), "file_name": "recipe.txt"}]


def contract_pdf(rng: random.Random) -> list[dict]:
    payments = []
    day = dt.date(2024, 9, 15)
    for i in range(1, 11):
        payments.append((i, day, rng.randrange(4000, 15000, 250)))
        day = day + dt.timedelta(days=rng.choice([61, 92, 45]))
    page1 = ["SERVICE AGREEMENT", "", "Between Kestrel Software GmbH (the Supplier) and Alder & Finch Ltd (the Client).",
             "", "Clause 4. Payments", "The Client shall pay the Supplier the instalments listed in Schedule A.",
             "All amounts are in euros and exclude VAT.", "", "Clause 5. Term",
             "The agreement runs until the last instalment has been paid."]
    page2 = ["Schedule A - Instalments", ""]
    for i, d_, amount in payments:
        page2.append(f"Instalment {i}: due {d_.strftime('%d %B %Y')}, amount EUR {amount}")
    write_pdf(FILES / "service_agreement.pdf", [page1, page2])
    due_2025 = sum(a for _, d_, a in payments if d_.year == 2025)
    assert any(d_.year != 2025 for _, d_, _ in payments)
    return [{"question": "Under the attached service_agreement.pdf, what is the total of the instalments due in calendar "
                         "year 2025, in euros?",
             "answer": number(due_2025), "file_name": "service_agreement.pdf"}]


def books_docx(rng: random.Random) -> list[dict]:
    books = [("The Glass Orchard", 1938), ("Salt and Iron", 1961), ("A Winter in Tallinn", 1947),
             ("Northern Lines", 1952), ("The Quiet Engine", 1929), ("Letters from Porto", 1974),
             ("Copper Sky", 1944), ("The Ninth Lantern", 1950), ("River of Names", 1983), ("Field Notes", 1936)]
    rows = [[t, y, rng.randint(140, 620)] for t, y in books]
    d = new_docx()
    d.add_heading("Reading room: donated first editions", level=1)
    d.add_paragraph("The following first editions were donated to the reading room in 2024.")
    add_table(d, ["Title", "Year published", "Pages"], rows)
    d.add_paragraph("Books published before 1950 are kept in the closed stacks.")
    d.save(FILES / "donations.docx")
    pages = sum(r[2] for r in rows if r[1] < 1950)
    return [{"question": "What is the total number of pages of the books in the attached donations.docx that were "
                         "published before 1950?",
             "answer": number(pages), "file_name": "donations.docx"}]


def sensor(rng: random.Random) -> list[dict]:
    t = dt.datetime(2025, 7, 1, 0, 0)
    temp = 18.0
    rows = []
    for _ in range(96):
        temp = round(temp + rng.uniform(-1.2, 1.5), 1)
        rows.append([t.isoformat(timespec="minutes"), temp])
        t += dt.timedelta(minutes=15)
    write_csv(FILES / "sensor_readings.csv", ["timestamp", "temperature_c"], rows)
    rises = [round(b[1] - a[1], 1) for a, b in zip(rows, rows[1:])]
    return [{"question": "The attached sensor_readings.csv has a temperature reading every 15 minutes. What was the largest "
                         "increase in temperature between two consecutive readings, in degrees Celsius? Give one decimal place.",
             "answer": number(max(rises), 1), "file_name": "sensor_readings.csv"}]


def budget(rng: random.Random) -> list[dict]:
    months = [calendar.month_name[m] for m in range(1, 13)]
    rows = []
    for m in months:
        plan = rng.randrange(20000, 40000, 1000)
        rows.append([m, plan, plan + rng.randrange(-4000, 6000, 50)])
    write_xlsx(FILES / "budget_2024.xlsx", {"2024": (["month", "planned_eur", "actual_eur"], rows)})
    over = sorted(((r[2] - r[1], r[0]) for r in rows), reverse=True)
    assert over[0][0] > over[1][0] > 0
    return [{"question": "In the attached budget_2024.xlsx, in which month did actual spending exceed the planned amount "
                         "by the largest margin? Give the month's name.",
             "answer": over[0][1], "file_name": "budget_2024.xlsx"}]


# --------------------------------------------------------------------------- tasks without files


def computed() -> list[dict]:
    def is_prime(n: int) -> bool:
        return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))

    sundays = sum(1 for y in range(1901, 2001) for m in range(1, 13) if dt.date(y, m, 1).weekday() == 6)
    steps, n = 0, 27
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    balance = not_a_tie(5000 * (1 + 0.035 / 12) ** 120, 2)
    palindromes = sum(1 for k in range(1, 10000) if str(k) == str(k)[::-1] and bin(k)[2:] == bin(k)[:1:-1])
    return [
        {"question": "How many prime numbers are there between 1000 and 2000?",
         "answer": number(sum(is_prime(k) for k in range(1000, 2001)))},
        {"question": "What is the sum of the decimal digits of 2 to the power 100?",
         "answer": number(sum(map(int, str(2 ** 100))))},
        {"question": "How many months between January 1901 and December 2000 (inclusive) began on a Sunday?",
         "answer": number(sundays)},
        {"question": "How many days passed from 20 July 1969 to 1 January 2000 (counting 1 January 2000 but not 20 July 1969)?",
         "answer": number((dt.date(2000, 1, 1) - dt.date(1969, 7, 20)).days)},
        {"question": "What is the smallest positive integer divisible by every integer from 1 to 20?",
         "answer": number(math.lcm(*range(1, 21)))},
        {"question": "Starting from 27, repeatedly halve the number when it is even and replace it by 3n+1 when it is odd. "
                     "How many steps does it take to reach 1?",
         "answer": number(steps)},
        {"question": "A deposit of 5000 dollars earns 3.5% annual interest compounded monthly. What is the balance after "
                     "10 years, in dollars rounded to the cent?",
         "answer": number(balance, 2)},
        {"question": "How many positive integers below 10000 read the same forwards and backwards both in base 10 and "
                     "in base 2 (without leading zeros)?",
         "answer": number(palindromes)},
    ]


def main() -> None:
    FILES.mkdir(parents=True, exist_ok=True)
    for old in FILES.iterdir():
        old.unlink()
    rng = random.Random(20261201)
    tasks = []
    for make in (orders, inventory, staff, quarterly_pdf, minutes_docx, server_log, exams, rainfall, trip, recipe,
                 contract_pdf, books_docx, sensor, budget):
        tasks += make(rng)
    tasks += computed()
    with (OUT / "tasks.jsonl").open("w", encoding="utf-8") as out:
        for i, t in enumerate(tasks, 1):
            record = {"task_id": f"bon-{i:02d}", "question": t["question"], "answer": t["answer"]}
            if t.get("file_name"):
                record["file_name"] = t["file_name"]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {len(tasks)} tasks ({sum('file_name' in t for t in tasks)} with a file) to {OUT}")


if __name__ == "__main__":
    main()
