"""Files the app tests upload: real images made with Pillow, a real PNG bomb, generated CSVs."""

from __future__ import annotations

import io
import random
import struct
import zlib
from datetime import date, timedelta

from PIL import Image

CSV_HEADER = "date,region,product,units,unit_price"


def jpeg_bytes(width: int = 640, height: int = 480, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):  # some structure, so the JPEG is not trivially small
        image.putpixel((x, (x * 7) % height), (255, 255, 255))
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def png_bytes(width: int = 400, height: int = 300, mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 120, 200, 128) if mode == "RGBA" else 90).save(buffer, "PNG")
    return buffer.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A complete, valid 1-bit PNG of ``width`` x ``height`` zeros: ~100 kB that decode to ``width*height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def truncated_png() -> bytes:
    data = png_bytes(300, 300, "RGB")
    return data[: len(data) // 2]


def sales_csv(rows: int, seed: int = 1, bad_line: int | None = None) -> bytes:
    """A valid sales CSV of ``rows`` data rows; with ``bad_line``, that line's units column is not a number."""
    rng = random.Random(seed)
    lines = [CSV_HEADER]
    start = date(2024, 1, 1)
    for index in range(rows):
        line_number = index + 2
        units = "lots" if line_number == bad_line else str(rng.randint(1, 50))
        day = start + timedelta(days=index % 365)
        lines.append(f"{day},{rng.choice(['north', 'south', 'east', 'west'])},item-{rng.randint(1, 30)},{units},2.50")
    return ("\n".join(lines) + "\n").encode()
