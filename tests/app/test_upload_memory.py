"""Accepted uploads do not amplify memory: the pipeline streams its CSV, thumbnails decode reduced.

Each case runs the task's work in a fresh process and reads that process's peak resident memory
while it ran (Linux ``VmHWM``, reset once the imports are done); ``bench/upload_memory.py``
publishes the same measurement for more sizes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.processes import REPO_ROOT

pytestmark = pytest.mark.slow
MIB = 1024 * 1024

CHILD = r"""
import gc, json, sys
from pathlib import Path
kind, source, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from app import imaging, pipeline

def status(field):
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))

gc.collect()
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS:")
if kind == "csv":
    pipeline.run(source, out / "report.json", lambda percent, message: None)
else:
    imaging.make_thumbnails(source, {size: out / f"t{size}.jpg" for size in (150, 300, 600)}, 25_000_000)
print(json.dumps({"added_kib": status("VmHWM:") - before}))
"""


def added_mib(kind: str, source: Path) -> float:
    args = [sys.executable, "-c", CHILD, kind, str(source), str(source.parent)]
    completed = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120)
    return float(json.loads(completed.stdout)["added_kib"]) / 1024


def test_a_10_mib_csv_is_streamed(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("w") as file:
        file.write("date,region,product,units,unit_price\n")
        index = 0
        while file.tell() < 10 * MIB:
            file.write(f"2024-01-{index % 28 + 1:02d},r{index % 7},p{index % 13},{index % 9 + 1},1.50\n")
            index += 1
    assert added_mib("csv", source) < 20, "the rows were kept in memory (it took 328 MiB before streaming)"


def test_a_small_png_that_decodes_to_25_megapixels_stays_within_its_decoded_size(tmp_path: Path) -> None:
    source = tmp_path / "flat.png"
    buffer = io.BytesIO()
    Image.new("RGBA", (4950, 4950), (90, 160, 30, 200)).save(buffer, "PNG", optimize=True)
    source.write_bytes(buffer.getvalue())  # about 100 KiB
    decoded_mib = 4950 * 4950 * 4 / MIB  # one RGBA copy of the pixels: 93 MiB
    assert added_mib("image", source) < decoded_mib * 1.8, "more than one full-size copy (3.5 copies before)"
