"""The CSV pipeline on its own: every problem names its line and column; progress only moves forward."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from app import pipeline

HEADER = "date,region,product,units,unit_price\n"


def run(tmp_path: Path, text: str | bytes) -> tuple[dict[str, object], list[float]]:
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode() if isinstance(text, str) else text)
    seen: list[float] = []
    summary = pipeline.run(source, tmp_path / "report.json", lambda percent, _message: seen.append(percent))
    return summary, seen


def test_summary_report_and_progress(tmp_path: Path) -> None:
    text = (
        "\ufeffUnit_Price,Date,Region,Product,Units,Note\n"
        + "2.50,2024-01-02,north,pen,4,x\n\n1,2024-01-01,south,cap,3,\n"
    )
    summary, seen = run(tmp_path, text)

    assert summary["rows"] == 2 and summary["total_units"] == 7 and summary["total_revenue"] == "13.00"
    assert (summary["date_from"], summary["date_to"]) == ("2024-01-01", "2024-01-02")
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 100
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == summary


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("2024-13-01,north,pen,1,1\n", "line 2, column 1 (date): '2024-13-01' is not a date (YYYY-MM-DD)"),
        ("2024-01-01,,pen,1,1\n", "line 2, column 2 (region): must be 1 to 100 characters"),
        ("2024-01-01,north,pen,-1,1\n", "line 2, column 4 (units): '-1' is not a whole number"),
        ("2024-01-01,north,pen,1" + "0" * 5000 + ",1\n", "line 2, column 4 (units): '1000"),
        ("2024-01-01,north,pen,1,NaN\n", "line 2, column 5 (unit_price): 'NaN' is not a price"),
        ("2024-01-01,north,pen,1,1e30\n", "line 2, column 5 (unit_price): '1e30' is not a price"),
        ("2024-01-01,north,pen,1,abc\n", "line 2, column 5 (unit_price): 'abc' is not a number"),
        ("2024-01-01,north,pen,1\n", "line 2: expected 5 fields, found 4"),
        ('2024-01-01,"north,pen,1,1\n', "line 2: malformed CSV (unexpected end of data)"),
    ],
)
def test_bad_values_name_line_and_column(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(pipeline.PipelineError) as raised:
        run(tmp_path, HEADER + body)
    assert str(raised.value).startswith(message)


def test_many_problems_are_summarized(tmp_path: Path) -> None:
    body = "".join(f"2024-01-01,north,pen,x{line},1\n" for line in range(2, 12))
    with pytest.raises(pipeline.PipelineError, match=r"line 2, column 4 .* \(and 5 more problem\(s\)\)"):
        run(tmp_path, HEADER + body)


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(pipeline.PipelineError, match="line 3: not UTF-8"):
        run(tmp_path, HEADER.encode() + b"2024-01-01,north,pen,1,1\n2024-01-01,n\xe9rd,pen,1,1\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"a,b\x00,c\n", "binary"),
        (b"date;region;product;units;unit_price\n", "lacks column(s) date, region, product, units, unit_price"),
    ],
)
def test_upload_check_refuses_what_is_not_a_sales_csv(data: bytes, message: str) -> None:
    with pytest.raises(pipeline.PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline.check_upload(io.BytesIO(data))
