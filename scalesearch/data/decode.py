"""One image file as the store keeps it: any mode to 8-bit RGB, short side to S, center crop."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SIZE_SAMPLE = 64            # images whose size caps S (a store never upsamples a folder of small images)
Decoded = tuple[np.ndarray, list[tuple[int, str]], int]


def decode_chunk(paths: Sequence[str], resolution: int) -> Decoded:
    """Paths as uint8 (n, S, S, 3) squares, with (index, reason) of each file that could not be
    decoded (its square left black) and the number of images smaller than S (upsampled)."""
    out = np.zeros((len(paths), resolution, resolution, 3), dtype=np.uint8)
    bad: list[tuple[int, str]] = []
    upsampled = 0
    for i, path in enumerate(paths):
        try:
            square, small = square_image(path, resolution)
        except Exception as exc:  # noqa: BLE001 - any undecodable file is skipped and named
            bad.append((i, f"{type(exc).__name__}: {str(exc)[:120]}"))
            continue
        out[i] = square
        upsampled += small
    return out, bad, upsampled


def square_image(path: str | Path, resolution: int) -> tuple[np.ndarray, bool]:
    """One image resized by its short side to S and center-cropped to S x S, uint8 (S, S, 3) RGB,
    and whether it was smaller than S.  Grayscale, palette, CMYK, alpha and 16-bit images are
    converted to 8-bit RGB (alpha over mid-grey); JPEGs are decoded at the smallest scale that
    keeps the short side at least S (PIL's draft mode)."""
    from PIL import Image

    with Image.open(path) as image:
        w, h = image.size
        short = min(w, h)
        if image.format == "JPEG" and short > resolution:
            image.draft("RGB", (math.ceil(w * resolution / short), math.ceil(h * resolution / short)))
        rgb = to_rgb(image)
    w, h = rgb.size
    side = min(w, h)
    if (w, h) != (side, side):   # the center square alone: nothing outside it bleeds in through the filter
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if side != resolution:
        rgb = rgb.resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), short < resolution


def to_rgb(image: Any) -> Any:
    """8-bit RGB of any PIL image: 16- and 32-bit integer images scaled to 8 bits, alpha composited
    over mid-grey, everything else through PIL's own conversion."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else max(1, int(values.max()))
        image = Image.fromarray((np.clip(values, 0, top) * 255 // top).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        grey = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(grey, rgba).convert("RGB")
    return image.convert("RGB")


def image_short_sides(paths: Sequence[str], sample: int = SIZE_SAMPLE) -> list[int]:
    """Short sides of up to ``sample`` images evenly spread over ``paths`` (headers only)."""
    from PIL import Image

    sides = []
    for path in paths[::max(1, len(paths) // sample)][:sample]:
        with contextlib.suppress(Exception), Image.open(path) as image:
            sides.append(min(image.size))
    return sides
