"""Rendering a Layout to a 64 x 64 RGB image with PIL (drawn at 2x, box-downsampled), and measuring how much of
each instance stays visible.

    background   per scene type (kitchen tiles and counter, street sky and road, office wall and floor,
                 living-room wallpaper and floor, park sky and grass), brightness jitter +-12
    glyph        catalog shapes: body in the object's colour (+-12 jitter) with the category's texture
                 (a darker shade, lighter for black), fixed-ink details, a dark outline unless faint
    blend        alpha composite in drawing order (faint: alpha 0.35-0.5; hidden: 0.1)
    noise        Gaussian, sigma 4, after downsampling
    visible      share of an instance's pixels not covered by later instances
    masks        each instance's visible pixels in the 64 x 64 image: a pixel belongs to the instance that owns
                 (drew last over) most of the 4 drawing pixels behind it, at least 2 (the later one on a tie)
PNG bytes are fixed by the pixels (compress level 6, no metadata).
"""

from __future__ import annotations

import functools
import io
import random

import numpy as np
from PIL import Image, ImageDraw

from povid_eval.world.catalog import CATEGORY_BY_NAME, IMAGE_SIZE, INKS, PALETTE, SCENE_BY_NAME
from povid_eval.world.sampling import Instance, Layout

SCALE = 2
S = IMAGE_SIZE * SCALE
PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "optimize": False}


def _fill(a: np.ndarray, y0: float, y1: float, rgb) -> None:
    a[int(y0 * S) : int(y1 * S)] = rgb


@functools.cache
def _backdrop(kind: str) -> np.ndarray:
    """The fixed part of a scene's backdrop, float32 (S, S, 3); read-only."""
    a = np.zeros((S, S, 3), np.float32)
    yy, xx = np.mgrid[0:S, 0:S]
    if kind == "kitchen":
        _fill(a, 0, 1, (208, 203, 188))
        a[(yy % 16 == 0) | (xx % 16 == 0)] = (186, 181, 166)
        _fill(a, 0.72, 1, (152, 116, 84))
    elif kind == "street":
        _fill(a, 0, 0.22, (166, 200, 230))
        _fill(a, 0.22, 1, (108, 108, 113))
        a[(yy >= int(0.78 * S)) & (yy < int(0.78 * S) + 3) & (xx % 24 < 12)] = (225, 225, 215)
    elif kind == "office":
        _fill(a, 0, 0.75, (221, 211, 182))
        _fill(a, 0.75, 1, (126, 116, 106))
    elif kind == "living_room":
        _fill(a, 0, 0.75, (188, 152, 142))
        a[(yy < int(0.75 * S)) & (xx % 12 < 3)] = (172, 138, 130)
        _fill(a, 0.75, 1, (142, 96, 60))
    elif kind == "park":
        _fill(a, 0, 0.3, (160, 205, 240))
        _fill(a, 0.3, 1, (96, 166, 82))
        speckle = (np.arange(S * S).reshape(S, S) * 7919 % 101) < 4  # a fixed sparse grass pattern
        a[speckle & (yy >= int(0.3 * S))] = (74, 140, 64)
    else:
        raise ValueError(f"unknown background {kind!r}")
    a.flags.writeable = False
    return a


def background(kind: str, rng: random.Random) -> np.ndarray:
    """The scene's backdrop with a brightness jitter, float32 (S, S, 3), a fresh array."""
    return _backdrop(kind) + np.float32(rng.uniform(-12, 12))


_TEXTURES = {
    "solid": lambda y, x: np.zeros_like(y, bool),
    "hstripes": lambda y, x: (y // 3) % 2 == 0,
    "vstripes": lambda y, x: (x // 3) % 2 == 0,
    "dots": lambda y, x: (y % 5 < 2) & (x % 5 < 2),
    "checker": lambda y, x: ((y // 3) + (x // 3)) % 2 == 0,
    "diagonal": lambda y, x: ((y + x) // 3) % 2 == 0,
}
_MARGIN = 8


@functools.cache
def _texture(name: str) -> np.ndarray:
    """The texture over the whole canvas plus a margin, indexed [y + _MARGIN, x + _MARGIN]."""
    yy, xx = np.mgrid[-_MARGIN : S + _MARGIN, -_MARGIN : S + _MARGIN]
    return _TEXTURES[name](yy, xx)


def _draw(d: ImageDraw.ImageDraw, shape: str, coords, extra, box, fill) -> None:
    x0, y0, w, h = box
    pts = [(x0 + coords[i] * w, y0 + coords[i + 1] * h) for i in range(0, len(coords), 2)]
    if shape in ("rect", "ellipse", "pie"):
        (ax, ay), (bx, by) = pts
        pts = [(ax, ay), (max(ax, bx - 1), max(ay, by - 1))]
    if shape == "rect":
        d.rectangle(pts, fill=fill)
    elif shape == "ellipse":
        d.ellipse(pts, fill=fill)
    elif shape == "polygon":
        d.polygon(pts, fill=fill)
    elif shape == "line":
        d.line(pts, fill=fill, width=max(2, round(extra[0] * min(w, h))), joint="curve")
    elif shape == "pie":
        d.pieslice(pts, extra[0], extra[1], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


_INK_INDEX = {name: 2 + k for k, name in enumerate(INKS)}  # index image: 0 empty, 1 body, 2.. inks


def glyph(inst: Instance, rng: random.Random) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(rgb float32 (h, w, 3), alpha float32 (h, w) in [0, 1], (top, left)) of one instance at 2x, cropped."""
    cat = CATEGORY_BY_NAME[inst.category]
    x, y, w, h = (v * SCALE for v in inst.bbox)
    pad = 2
    cw, ch = w + 2 * pad, h + 2 * pad
    colour = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in PALETTE[inst.colour])
    index = Image.new("L", (cw, ch), 0)
    d = ImageDraw.Draw(index)
    for ink, shape, coords, *extra in cat.shapes:
        _draw(d, shape, coords, extra, (pad, pad, w, h), 1 if ink == "body" else _INK_INDEX[ink])
    idx = np.asarray(index)
    lut = np.zeros((2 + len(INKS), 3), np.float32)
    lut[1] = colour
    lut[2:] = list(INKS.values())
    rgb = lut[idx]
    top, left = y - pad + _MARGIN, x - pad + _MARGIN
    textured = (idx == 1) & _texture(cat.texture)[top : top + ch, left : left + cw]
    shade = np.asarray(colour, np.float32)
    rgb[textured] = shade + 60 if shade.max() < 70 else shade * 0.72
    mask = idx > 0
    if not inst.faint and not inst.hidden:
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        rgb[mask & ~inner] = (20, 20, 24) if sum(colour) > 150 else (200, 200, 200)
    alpha = mask.astype(np.float32) * inst.alpha
    return rgb, alpha, (y - pad, x - pad)


def render(layout: Layout, rng: random.Random) -> tuple[Image.Image, list[float], list[np.ndarray]]:
    """The 64 x 64 RGB image of a layout, each instance's visible fraction and its visible-pixel mask (bool
    (64, 64)), in drawing order."""
    canvas = background(SCENE_BY_NAME[layout.scene].background, rng)
    owner = np.full((S, S), -1, np.int16)
    sizes = []
    for i, inst in enumerate(layout.instances):
        rgb, alpha, (top, left) = glyph(inst, rng)
        # clip the padded crop to the canvas
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + alpha.shape[0], S), min(left + alpha.shape[1], S)
        rgb, alpha = rgb[t0 - top : t1 - top, l0 - left : l1 - left], alpha[t0 - top : t1 - top, l0 - left : l1 - left]
        region = canvas[t0:t1, l0:l1]
        a = alpha[..., None]
        canvas[t0:t1, l0:l1] = region * (1 - a) + rgb * a
        owner[t0:t1, l0:l1][alpha > 0] = i
        sizes.append(int((alpha > 0).sum()))
    visible = [float((owner == i).sum()) / n if n else 0.0 for i, n in enumerate(sizes)]
    masks = _pixel_owners(owner, len(sizes))
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 4, (IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(np.asarray(img, np.float32) + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(pixels), visible, masks


def _pixel_owners(owner: np.ndarray, n: int) -> list[np.ndarray]:
    """The owner map at the drawing scale (S, S; -1 for background) -> each of the n instances' bool
    (IMAGE_SIZE, IMAGE_SIZE) mask of the image pixels it owns (see the module docstring): disjoint masks."""
    if n == 0:
        return []
    blocks = np.stack([(owner == i).reshape(IMAGE_SIZE, SCALE, IMAGE_SIZE, SCALE).sum(axis=(1, 3)) for i in range(n)])
    best = n - 1 - blocks[::-1].argmax(axis=0)  # the later instance on a tie
    kept = blocks.max(axis=0) * 2 >= SCALE * SCALE
    return [(best == i) & kept for i in range(n)]


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **PNG_OPTIONS)
    return buf.getvalue()
