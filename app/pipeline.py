"""The project pipeline over a sales CSV: parse, validate, aggregate, report.

The CSV has a header row with at least ``date,region,product,units,unit_price`` (any order,
extra columns ignored). Every problem is reported with its line and column, e.g.
``line 7, column 4 (units): 'abc' is not a whole number``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO

from app.storage import save_bytes

REQUIRED_COLUMNS = ("date", "region", "product", "units", "unit_price")
HEADER_PROBE_BYTES = 64 * 1024
MAX_TEXT_FIELD_CHARS = 100
MAX_REPORTED_PROBLEMS = 5
TOP_N = 10
MAX_UNITS = 10**9
MAX_UNIT_PRICE = Decimal(10**9)  # bounds keep every sum exact within Decimal's 28 digits

ProgressFn = Callable[[float, str], None]


class PipelineError(ValueError):
    """The CSV is wrong; the message names the line and column, for the project's ``error_message``."""


@dataclass(frozen=True)
class Sale:
    line: int
    day: date
    region: str
    product: str
    units: int
    unit_price: Decimal


def check_upload(source: BinaryIO) -> None:
    """Cheap checks at upload time (text, a header with the required columns); ``PipelineError`` if not."""
    source.seek(0)
    head = source.read(HEADER_PROBE_BYTES)
    source.seek(0)
    if not head.strip():
        raise PipelineError("the CSV is empty: it needs a header row and data rows")
    if b"\x00" in head:
        raise PipelineError("the file is binary (it contains NUL bytes), not a CSV text file")
    text = head.decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(text)), [])
    _column_positions(header)


def run(csv_path: Path, report_path: Path, progress: ProgressFn) -> dict[str, Any]:
    """Run all four steps, reporting progress from 0 to 100; return the summary. ``PipelineError`` on bad data."""
    rows = _parse(csv_path.read_bytes(), progress)  # 0-25
    sales = _validate(rows, progress)  # 25-60
    summary = _aggregate(sales, progress)  # 60-90
    progress(90, "writing the report")
    report = {"generated_at": datetime.now(UTC).isoformat(), "summary": summary}
    save_bytes(json.dumps(report, indent=2).encode(), report_path)
    progress(100, "done")
    return summary


def _parse(data: bytes, progress: ProgressFn) -> list[tuple[int, list[str]]]:
    progress(0, "parsing")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PipelineError(f"line {line}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    total_lines = max(text.count("\n"), 1)
    reader = csv.reader(io.StringIO(text), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row:  # a blank line is no row
                rows.append((reader.line_num, row))
            if reader.line_num % 2000 == 0:
                progress(25 * reader.line_num / total_lines, "parsing")
    except csv.Error as exc:
        raise PipelineError(f"line {reader.line_num}: malformed CSV ({exc})") from None
    if not rows:
        raise PipelineError("the CSV is empty: it needs a header row and data rows")
    if len(rows) == 1:
        raise PipelineError("the CSV has a header row but no data rows")
    progress(25, f"parsed {len(rows) - 1} rows")
    return rows


def _column_positions(header: list[str]) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise PipelineError(
            f"line 1: the header lacks column(s) {', '.join(missing)}; it needs {','.join(REQUIRED_COLUMNS)}"
        )
    return {column: names.index(column) for column in REQUIRED_COLUMNS}


def _validate(rows: list[tuple[int, list[str]]], progress: ProgressFn) -> list[Sale]:
    (_, header), body = rows[0], rows[1:]
    positions = _column_positions(header)
    sales: list[Sale] = []
    problems: list[str] = []
    for index, (line, row) in enumerate(body):
        if len(row) != len(header):
            problems.append(f"line {line}: expected {len(header)} fields, found {len(row)}")
        else:
            try:
                sales.append(_sale(line, row, positions))
            except PipelineError as exc:
                problems.append(str(exc))
        if index % 2000 == 0:
            progress(25 + 35 * index / len(body), "validating")
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        raise PipelineError(shown + (f" (and {more} more problem(s))" if more > 0 else ""))
    progress(60, f"validated {len(sales)} rows")
    return sales


def _sale(line: int, row: list[str], positions: dict[str, int]) -> Sale:
    def field(column: str) -> tuple[str, str]:
        position = positions[column]
        return row[position].strip(), f"line {line}, column {position + 1} ({column})"

    day_text, where = field("date")
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise PipelineError(f"{where}: {day_text!r} is not a date (YYYY-MM-DD)") from None
    region, where = field("region")
    product, product_where = field("product")
    for value, place in ((region, where), (product, product_where)):
        if not value or len(value) > MAX_TEXT_FIELD_CHARS:
            raise PipelineError(f"{place}: must be 1 to {MAX_TEXT_FIELD_CHARS} characters")
    units_text, where = field("units")
    whole = units_text.isascii() and units_text.isdigit() and len(units_text) <= len(str(MAX_UNITS))
    if not whole or int(units_text) > MAX_UNITS:
        raise PipelineError(f"{where}: {units_text!r} is not a whole number from 0 to {MAX_UNITS}")
    price_text, where = field("unit_price")
    try:
        unit_price = Decimal(price_text)
    except InvalidOperation:
        raise PipelineError(f"{where}: {price_text!r} is not a number") from None
    if not unit_price.is_finite() or not 0 <= unit_price <= MAX_UNIT_PRICE:
        raise PipelineError(f"{where}: {price_text!r} is not a price from 0 to {MAX_UNIT_PRICE}")
    return Sale(line, day, region, product, int(units_text), unit_price)


def _aggregate(sales: list[Sale], progress: ProgressFn) -> dict[str, Any]:
    by_region: dict[str, list[Decimal]] = {}
    by_product: dict[str, list[Decimal]] = {}
    for index, sale in enumerate(sales):
        revenue = sale.unit_price * sale.units
        for table, key in ((by_region, sale.region), (by_product, sale.product)):
            totals = table.setdefault(key, [Decimal(0), Decimal(0)])
            totals[0] += sale.units
            totals[1] += revenue
        if index % 2000 == 0:
            progress(60 + 30 * index / len(sales), "aggregating")
    total_revenue = sum((totals[1] for totals in by_region.values()), Decimal(0))
    return {
        "rows": len(sales),
        "total_units": sum(sale.units for sale in sales),
        "total_revenue": _money(total_revenue),
        "date_from": min(sale.day for sale in sales).isoformat(),
        "date_to": max(sale.day for sale in sales).isoformat(),
        "regions": len(by_region),
        "products": len(by_product),
        "top_regions": _top(by_region),
        "top_products": _top(by_product),
    }


def _top(table: dict[str, list[Decimal]]) -> list[dict[str, Any]]:
    ranked = sorted(table.items(), key=lambda item: (-item[1][1], item[0]))[:TOP_N]
    return [{"name": name, "units": int(units), "revenue": _money(revenue)} for name, (units, revenue) in ranked]


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
