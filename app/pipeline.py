"""The project pipeline over a sales CSV: parse, validate, aggregate, report.

The CSV has a header row with at least ``date,region,product,units,unit_price`` (any order,
extra columns ignored). Every problem is reported with its line and column, e.g.
``line 7, column 4 (units): 'abc' is not a whole number``. The file is streamed: memory does not
grow with its size (see ``run``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
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
MAX_DATA_ROWS = 2_000_000  # far above what APP_MAX_UPLOAD_BYTES lets in; a bound whatever the cap is
MAX_DISTINCT_KEYS = 10_000  # per column: the totals of that many names are a few MB
PROGRESS_EVERY_ROWS = 250  # callers throttle; computing a percentage is cheap
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
    """Parse, validate and aggregate in one streaming pass (progress 0-90), then write the report (90-100).

    Memory stays flat whatever the file holds: rows are read one at a time and never kept, at
    most ``MAX_REPORTED_PROBLEMS`` problem texts are kept (the rest are counted), and the
    per-region and per-product totals are capped at ``MAX_DISTINCT_KEYS`` names each.
    ``PipelineError`` on bad data.
    """
    progress(0, "parsing")
    size = max(csv_path.stat().st_size, 1)
    totals = _Totals()
    with csv_path.open("rb") as raw:
        lines = _Lines(raw)
        reader = csv.reader(lines, strict=True)
        try:
            positions: dict[str, int] | None = None
            width = 0
            for row in reader:
                if not row:  # a blank line is no row
                    continue
                if positions is None:
                    positions, width = _column_positions(row), len(row)
                    continue
                totals.add(reader.line_num, row, width, positions)
                if totals.rows_seen % PROGRESS_EVERY_ROWS == 0:
                    progress(90 * lines.bytes_read / size, "validating and aggregating")
        except csv.Error as exc:
            raise PipelineError(f"line {reader.line_num}: malformed CSV ({exc})") from None
    if positions is None:
        raise PipelineError("the CSV is empty: it needs a header row and data rows")
    summary = totals.summary()
    progress(90, "writing the report")
    report = {"generated_at": datetime.now(UTC).isoformat(), "summary": summary}
    save_bytes(json.dumps(report, indent=2).encode(), report_path)
    progress(100, "done")
    return summary


class _Lines:
    """The file's lines as text, one at a time, counting bytes; ``PipelineError`` naming a non-UTF-8 line."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes_read = 0
        self._line = 0

    def __iter__(self) -> Iterator[str]:
        for data in self._raw:
            self._line += 1
            start = self.bytes_read
            self.bytes_read += len(data)
            if self._line == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PipelineError(
                    f"line {self._line}: not UTF-8 text (byte {start + exc.start}); save the CSV as UTF-8"
                ) from None


class _Totals:
    """What the report needs, added up row by row; the problems found, the first few of them in full."""

    def __init__(self) -> None:
        self.rows_seen = 0
        self.rows = 0
        self.total_units = 0
        self.first_day: date | None = None
        self.last_day: date | None = None
        self.by_region: dict[str, list[Decimal]] = {}
        self.by_product: dict[str, list[Decimal]] = {}
        self.problems: list[str] = []
        self.more_problems = 0

    def add(self, line: int, row: list[str], width: int, positions: dict[str, int]) -> None:
        self.rows_seen += 1
        if self.rows_seen > MAX_DATA_ROWS:
            raise PipelineError(f"line {line}: more than {MAX_DATA_ROWS} data rows; split the file")
        if len(row) != width:
            self._problem(f"line {line}: expected {width} fields, found {len(row)}")
            return
        try:
            sale = _sale(line, row, positions)
        except PipelineError as exc:
            self._problem(str(exc))
            return
        if self.problems:  # the file is failing anyway: only the problems matter from here on
            return
        self.rows += 1
        self.total_units += sale.units
        self.first_day = sale.day if self.first_day is None else min(self.first_day, sale.day)
        self.last_day = sale.day if self.last_day is None else max(self.last_day, sale.day)
        revenue = sale.unit_price * sale.units
        for table, key, column in ((self.by_region, sale.region, "region"), (self.by_product, sale.product, "product")):
            totals = table.get(key)
            if totals is None:
                if len(table) >= MAX_DISTINCT_KEYS:
                    where = f"line {line}, column {positions[column] + 1} ({column})"
                    raise PipelineError(f"{where}: more than {MAX_DISTINCT_KEYS} distinct {column} names")
                totals = table[key] = [Decimal(0), Decimal(0)]
            totals[0] += sale.units
            totals[1] += revenue

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def summary(self) -> dict[str, Any]:
        if self.problems:
            more = f" (and {self.more_problems} more problem(s))" if self.more_problems else ""
            raise PipelineError("; ".join(self.problems) + more)
        if self.first_day is None or self.last_day is None:
            raise PipelineError("the CSV has a header row but no data rows")
        total_revenue = sum((totals[1] for totals in self.by_region.values()), Decimal(0))
        return {
            "rows": self.rows,
            "total_units": self.total_units,
            "total_revenue": _money(total_revenue),
            "date_from": self.first_day.isoformat(),
            "date_to": self.last_day.isoformat(),
            "regions": len(self.by_region),
            "products": len(self.by_product),
            "top_regions": _top(self.by_region),
            "top_products": _top(self.by_product),
        }


def _column_positions(header: list[str]) -> dict[str, int]:
    names = [name.strip().lower() for name in header]
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise PipelineError(
            f"line 1: the header lacks column(s) {', '.join(missing)}; it needs {','.join(REQUIRED_COLUMNS)}"
        )
    return {column: names.index(column) for column in REQUIRED_COLUMNS}


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


def _top(table: dict[str, list[Decimal]]) -> list[dict[str, Any]]:
    ranked = sorted(table.items(), key=lambda item: (-item[1][1], item[0]))[:TOP_N]
    return [{"name": name, "units": int(units), "revenue": _money(revenue)} for name, (units, revenue) in ranked]


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
