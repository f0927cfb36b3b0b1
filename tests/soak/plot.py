"""A line plot written as PNG with the standard library only (zlib, struct): one panel per
series, time on the x axis, its own y scale (min and max printed in the panel's caption row
of pixels is beyond this; the numbers are in the CSV and the printed summary)."""

from __future__ import annotations

import struct
import zlib

WIDTH, PANEL, MARGIN = 900, 160, 12
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def _png(width: int, height: int, rows: list[bytearray]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def plot(series: dict[str, list[tuple[float, float]]], path: str, marks: list[float] = ()) -> None:
    """Draws each named series of (t, value) in its own panel; `marks` are times drawn as grey
    vertical lines in every panel (config swaps, the Redis restart)."""
    height = PANEL * len(series)
    rows = [bytearray(b"\xff" * (WIDTH * 3)) for _ in range(height)]

    def put(x: int, y: int, colour: tuple[int, int, int]) -> None:
        if 0 <= x < WIDTH and 0 <= y < height:
            rows[y][3 * x : 3 * x + 3] = bytes(colour)

    t_end = max((t for points in series.values() for t, _ in points), default=1.0) or 1.0
    for n, (name, points) in enumerate(series.items()):
        top, bottom = n * PANEL + MARGIN, (n + 1) * PANEL - MARGIN
        for x in range(MARGIN, WIDTH - MARGIN):
            put(x, bottom, (0, 0, 0))
        for y in range(top, bottom):
            put(MARGIN, y, (0, 0, 0))
        for mark in marks:
            x = MARGIN + int((WIDTH - 2 * MARGIN) * mark / t_end)
            for y in range(top, bottom, 3):
                put(x, y, (170, 170, 170))
        if not points:
            continue
        values = [v for _, v in points]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        colour = COLOURS[n % len(COLOURS)]
        previous = None
        for t, v in points:
            x = MARGIN + int((WIDTH - 2 * MARGIN) * t / t_end)
            y = bottom - int((bottom - top) * (v - low) / span)
            if previous:
                (px, py) = previous
                steps = max(abs(x - px), abs(y - py), 1)
                for i in range(steps + 1):
                    put(px + (x - px) * i // steps, py + (y - py) * i // steps, colour)
            previous = (x, y)
    with open(path, "wb") as out:
        out.write(_png(WIDTH, height, rows))
