"""Peak memory of the reference app's heavy tasks per upload size: the CSV pipeline and the thumbnails.

``python -m bench.upload_memory`` (``--smoke`` for small sizes). Each case runs the task's work
(``app.pipeline.run``, ``app.imaging.make_thumbnails``) on a generated upload in a fresh process
and reports that process's peak resident memory while the task ran (Linux ``VmHWM``, reset once the
imports are done) and how much that is above the size it had before: what one such task adds to
a worker or to the in-process API.
The CSVs are valid ones, an all-bad one (a problem on every line) and one with a huge number of
distinct products; the images are a camera-sized JPEG, a large RGBA PNG and a small-file PNG that
decodes to many pixels (the decompression-bomb shape, just under the pixel cap).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

CHILD = r"""
import gc, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
kind, source, out = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
from app import imaging, pipeline

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

gc.collect()
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size: imports are done
before = status("VmRSS")
started = time.perf_counter()
outcome = "ok"
try:
    if kind == "csv":
        pipeline.run(source, out / "report.json", lambda percent, message: None)
    else:
        imaging.make_thumbnails(source, {size: out / f"t{size}.jpg" for size in (150, 300, 600)}, int(sys.argv[5]))
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
peak = status("VmHWM")
result = {"peak_kib": peak, "added_kib": peak - before, "seconds": time.perf_counter() - started}
print(json.dumps({**result, "outcome": outcome}))
"""


def csv_file(path: Path, size_bytes: int, row: Callable[[int], str]) -> Path:
    with path.open("w") as file:
        file.write("date,region,product,units,unit_price\n")
        index = 0
        while file.tell() < size_bytes:
            file.write(row(index))
            index += 1
    return path


def valid_row(index: int) -> str:
    return f"2024-01-{index % 28 + 1:02d},r{index % 7},p{index % 13},{index % 9 + 1},1.50\n"


def bad_row(index: int) -> str:
    return f"2024-01-{index % 28 + 1:02d},r{index % 7},p{index % 13},many,1.50\n"


def distinct_row(index: int) -> str:
    return f"2024-01-{index % 28 + 1:02d},region-{index},product-{index},{index % 9 + 1},1.50\n"


def image_file(path: Path, width: int, height: int, mode: str, kind: str) -> Path:
    image = Image.new(mode, (width, height), 0 if mode == "1" else (90, 160, 30, 200)[: len(mode)])
    if mode != "1" and width < 5000:  # the big ones stay flat: the decompression-bomb shape
        for x in range(0, width, 97):  # some structure, so the encoders have work to do
            image.paste((255,) * len(mode), (x, 0, x + 3, height))
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": 90} if kind == "JPEG" else {"optimize": True}))
    path.write_bytes(buffer.getvalue())
    return path


def measure(root: Path, kind: str, source: Path, work: Path, max_pixels: int) -> dict[str, object]:
    out = work / "out"
    out.mkdir(exist_ok=True)
    args = [sys.executable, "-c", CHILD, str(root), kind, str(source), str(out), str(max_pixels)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    completed = subprocess.run(args, capture_output=True, text=True, check=True, env=env)
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes, seconds in all")
    parser.add_argument("--max-pixels", type=int, default=None, help="APP_MAX_IMAGE_PIXELS (default: the app's)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app/ runs (e.g. an older one)")
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from app.settings import AppSettings

    max_pixels = options.max_pixels or AppSettings().max_image_pixels
    scale = 0.1 if options.smoke else 1.0
    with tempfile.TemporaryDirectory(prefix="upload-memory-") as directory:
        work = Path(directory)
        cases: list[tuple[str, str, Path]] = []
        for mib in (1, 5, 10):
            size = int(mib * MIB * scale)
            cases.append(("csv", f"valid CSV, {size / MIB:.1f} MiB", csv_file(work / f"v{mib}.csv", size, valid_row)))
        size = int(10 * MIB * scale)
        cases.append(("csv", f"all-bad CSV, {size / MIB:.1f} MiB", csv_file(work / "bad.csv", size, bad_row)))
        cases.append(("csv", f"distinct-keys CSV, {size / MIB:.1f} MiB", csv_file(work / "d.csv", size, distinct_row)))
        side = int(max_pixels**0.5 * 0.99 * (0.3 if options.smoke else 1.0))
        for label, width, height, mode, kind in (
            ("JPEG 6000x4000", int(6000 * scale**0.5), int(4000 * scale**0.5), "RGB", "JPEG"),
            ("PNG RGBA 4000x3000", int(4000 * scale**0.5), int(3000 * scale**0.5), "RGBA", "PNG"),
            (f"PNG 1-bit {side}x{side} (bomb shape)", side, side, "1", "PNG"),
            (f"PNG RGBA {side}x{side} (bomb shape)", side, side, "RGBA", "PNG"),
        ):
            path = image_file(work / f"{len(cases)}.img", width, height, mode, kind)
            cases.append(("image", f"{label}, {path.stat().st_size / 1024:.0f} KiB file", path))
        print(f"peak RSS of one task (APP_MAX_IMAGE_PIXELS={max_pixels}, app from {options.root})")
        print(f"{'upload':<44} {'peak MiB':>9} {'added MiB':>10} {'seconds':>8}  outcome")
        for kind, label, path in cases:
            result = measure(options.root, kind, path, work, max_pixels)
            peak_mib = int(str(result["peak_kib"])) / 1024
            added_mib = int(str(result["added_kib"])) / 1024
            seconds = float(str(result["seconds"]))
            outcome = str(result["outcome"])[:48]
            print(f"{label:<44} {peak_mib:>9.1f} {added_mib:>10.1f} {seconds:>8.2f}  {outcome}")


if __name__ == "__main__":
    main()
