"""Draw the app icon with the standard library only: ``assets/icon.png`` (256 px) and ``assets/icon.ico``.

    python installer/make_icon.py

A rounded square with a blue-to-teal gradient and a white sound wave. The ICO holds PNG images at 16, 24,
32, 48, 64, 128 and 256 px (Windows Vista and later read PNG-compressed icon entries).
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SIZES = (16, 24, 32, 48, 64, 128, 256)
BARS = (0.30, 0.55, 0.85, 0.65, 1.0, 0.7, 0.45, 0.8, 0.5, 0.28)  # relative heights of the wave bars
SUB = 4  # supersampling per axis


def _inside(x: float, y: float) -> tuple[bool, bool]:
    """(inside the rounded square, inside a wave bar) for a point in unit coordinates."""
    margin, radius = 0.04, 0.22
    lo, hi = margin, 1 - margin
    cx = min(max(x, lo + radius), hi - radius)
    cy = min(max(y, lo + radius), hi - radius)
    in_square = lo <= x <= hi and lo <= y <= hi and math.hypot(x - cx, y - cy) <= radius
    width = 0.62 / len(BARS)
    left = 0.19
    index = int((x - left) // width)
    in_bar = False
    if 0 <= index < len(BARS):
        centre = left + (index + 0.5) * width
        half_h = 0.30 * BARS[index]
        bar_half_w = 0.32 * width
        dy = max(abs(y - 0.5) - (half_h - bar_half_w), 0.0)
        in_bar = math.hypot(x - centre, dy) <= bar_half_w  # pill-shaped bars
    return in_square, in_bar


def render(size: int) -> bytes:
    """RGBA pixels, row by row."""
    top, bottom = (37, 99, 235), (13, 148, 136)
    out = bytearray()
    for py in range(size):
        for px in range(size):
            square = bar = 0
            for sy in range(SUB):
                for sx in range(SUB):
                    s, b = _inside((px + (sx + 0.5) / SUB) / size, (py + (sy + 0.5) / SUB) / size)
                    square += s
                    bar += s and b
            n = SUB * SUB
            t = (px + py) / (2 * size)
            bg = [round(a + (b - a) * t) for a, b in zip(top, bottom)]
            wb = bar / max(square, 1)
            rgb = [round(c * (1 - wb) + 255 * wb) for c in bg]
            out += bytes(rgb) + bytes([round(255 * square / n)])
    return bytes(out)


def png(size: int) -> bytes:
    raw = render(size)
    rows = b"".join(b"\x00" + raw[y * size * 4:(y + 1) * size * 4] for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def ico(images: dict[int, bytes]) -> bytes:
    entries, blobs = [], []
    offset = 6 + 16 * len(images)
    for size, data in sorted(images.items()):
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries.append(struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset))
        blobs.append(data)
        offset += len(data)
    return struct.pack("<HHH", 0, 1, len(images)) + b"".join(entries) + b"".join(blobs)


def main() -> int:
    ASSETS.mkdir(exist_ok=True)
    images = {size: png(size) for size in SIZES}
    (ASSETS / "icon.png").write_bytes(images[256])
    (ASSETS / "icon.ico").write_bytes(ico(images))
    print(f"wrote {ASSETS / 'icon.png'} and {ASSETS / 'icon.ico'} ({', '.join(map(str, SIZES))} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
