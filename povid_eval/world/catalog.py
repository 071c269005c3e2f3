"""What the synthetic world contains: COCO categories (real names and ids), the colour palette, the scene
types with their co-occurrence structure, and each category's glyph (data only, no logic).

Co-occurrence: every scene has a CORE of four categories that appear together in half of the images of the
scene and three of them in most of the others (the language prior a captioner learns), and a few EXTRAS that
appear now and then; people, chairs and cups turn up in several scene types (the frequent categories POPE's
"popular" split asks about). Half of the images drop one or two core categories on purpose (a "break"): a
model that trusts the prior more than the pixels names them.

Glyphs are drawn in a unit box (x0, y0, x1, y1 in [0, 1], y down). ``body`` shapes are filled with the
object's colour and the category's texture; ``detail`` shapes use a fixed ink so that the category reads
the same whatever its colour. Shapes: rect, ellipse, polygon (flat list of points), line (points, width),
pie (box, start, end degrees).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 64


@dataclass(frozen=True)
class Category:
    """A COCO category and how the world draws it."""

    id: int
    name: str
    supercategory: str
    aspect: float  # width / height of the glyph box
    # glyph height range in pixels (64 x 64 image), normal size; at least 14 (a ~60% "small" instance keeps 8), so
    # that the tiny tower's 16-pixel patches see it: with the extras at 7-15 pixels its head found them in 55% of
    # the images that show them, at 14 or more in 72% (world/pretrain.py, stage 0)
    height: tuple[int, int]
    max_count: int  # at most this many instances in one image
    colours: tuple[tuple[str, float], ...]  # (palette name, weight): the category's usual colours
    texture: str  # solid | hstripes | vstripes | dots | checker | diagonal
    shapes: tuple[tuple, ...]  # ("body"|ink, shape, coords[, width]) in the unit box


# Named colours, RGB. No "orange": it is a COCO category and would read as the fruit in a caption.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40),
    "green": (45, 160, 60),
    "blue": (45, 85, 205),
    "yellow": (235, 205, 35),
    "white": (245, 245, 245),
    "black": (28, 28, 28),
    "brown": (135, 80, 35),
    "gray": (130, 130, 135),
    "pink": (245, 135, 185),
    "purple": (135, 55, 175),
}

# Inks of glyph details (fixed, whatever the object's colour).
INKS: dict[str, tuple[int, int, int]] = {
    "dark": (35, 35, 40),
    "light": (235, 235, 230),
    "glass": (130, 185, 225),
    "screen": (55, 70, 95),
    "leaf": (40, 140, 45),
    "skin": (225, 180, 140),
    "lamp_r": (235, 40, 30),
    "lamp_y": (245, 200, 30),
    "lamp_g": (40, 200, 70),
    "soil": (95, 60, 30),
}

B = "body"

CATEGORIES: tuple[Category, ...] = (
    Category(
        1,
        "person",
        "person",
        0.5,
        (16, 24),
        3,
        (("blue", 3), ("red", 2), ("green", 2), ("purple", 1), ("black", 1)),
        "solid",
        (
            (B, "polygon", (0.2, 0.3, 0.8, 0.3, 0.9, 0.72, 0.1, 0.72)),
            (B, "rect", (0.22, 0.7, 0.42, 1)),
            (B, "rect", (0.58, 0.7, 0.78, 1)),
            ("skin", "ellipse", (0.25, 0, 0.75, 0.3)),
        ),
    ),
    Category(
        2,
        "bicycle",
        "vehicle",
        1.5,
        (14, 17),
        2,
        (("red", 2), ("blue", 2), ("black", 1)),
        "solid",
        (
            ("dark", "ellipse", (0, 0.45, 0.4, 1)),
            ("dark", "ellipse", (0.6, 0.45, 1, 1)),
            ("light", "ellipse", (0.08, 0.55, 0.32, 0.9)),
            ("light", "ellipse", (0.68, 0.55, 0.92, 0.9)),
            (B, "line", (0.2, 0.72, 0.45, 0.25, 0.8, 0.72, 0.2, 0.72), 0.12),
            (B, "line", (0.4, 0.2, 0.58, 0.2), 0.12),
        ),
    ),
    Category(
        3,
        "car",
        "vehicle",
        1.7,
        (14, 17),
        3,
        (("red", 3), ("blue", 2), ("white", 2), ("black", 1), ("gray", 2)),
        "solid",
        (
            (B, "rect", (0, 0.38, 1, 0.8)),
            (B, "polygon", (0.2, 0.4, 0.3, 0.05, 0.7, 0.05, 0.82, 0.4)),
            ("glass", "polygon", (0.3, 0.38, 0.36, 0.14, 0.64, 0.14, 0.72, 0.38)),
            ("dark", "ellipse", (0.1, 0.62, 0.34, 1)),
            ("dark", "ellipse", (0.66, 0.62, 0.9, 1)),
        ),
    ),
    Category(
        4,
        "motorcycle",
        "vehicle",
        1.5,
        (14, 17),
        2,
        (("black", 2), ("red", 2), ("blue", 1)),
        "diagonal",
        (
            ("dark", "ellipse", (0, 0.5, 0.36, 1)),
            ("dark", "ellipse", (0.64, 0.5, 1, 1)),
            (B, "polygon", (0.2, 0.35, 0.75, 0.35, 0.85, 0.65, 0.15, 0.65)),
            (B, "line", (0.72, 0.35, 0.82, 0.05), 0.1),
            ("dark", "rect", (0.3, 0.22, 0.6, 0.35)),
        ),
    ),
    Category(
        8,
        "truck",
        "vehicle",
        1.8,
        (14, 19),
        2,
        (("white", 2), ("red", 1), ("blue", 1), ("gray", 2)),
        "vstripes",
        (
            (B, "rect", (0, 0, 0.66, 0.78)),
            (B, "rect", (0.68, 0.3, 1, 0.78)),
            ("glass", "rect", (0.74, 0.36, 0.94, 0.55)),
            ("dark", "ellipse", (0.06, 0.66, 0.26, 1)),
            ("dark", "ellipse", (0.74, 0.66, 0.94, 1)),
        ),
    ),
    Category(
        10,
        "traffic light",
        "outdoor",
        0.4,
        (14, 20),
        2,
        (("black", 3), ("yellow", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 0.88)),
            ("dark", "rect", (0.4, 0.88, 0.6, 1)),
            ("lamp_r", "ellipse", (0.18, 0.04, 0.82, 0.3)),
            ("lamp_y", "ellipse", (0.18, 0.31, 0.82, 0.57)),
            ("lamp_g", "ellipse", (0.18, 0.58, 0.82, 0.84)),
        ),
    ),
    Category(
        13,
        "stop sign",
        "outdoor",
        1.0,
        (14, 17),
        1,
        (("red", 1),),
        "solid",
        (
            (B, "polygon", (0.3, 0, 0.7, 0, 1, 0.3, 1, 0.7, 0.7, 1, 0.3, 1, 0, 0.7, 0, 0.3)),
            ("light", "rect", (0.15, 0.42, 0.85, 0.58)),
        ),
    ),
    Category(
        15,
        "bench",
        "outdoor",
        2.0,
        (14, 17),
        2,
        (("brown", 3), ("green", 1), ("gray", 1)),
        "hstripes",
        (
            (B, "rect", (0, 0, 1, 0.3)),
            (B, "rect", (0, 0.42, 1, 0.62)),
            ("dark", "rect", (0.06, 0.62, 0.14, 1)),
            ("dark", "rect", (0.86, 0.62, 0.94, 1)),
        ),
    ),
    Category(
        16,
        "bird",
        "animal",
        1.3,
        (14, 17),
        3,
        (("blue", 2), ("red", 1), ("brown", 2), ("black", 1)),
        "solid",
        (
            (B, "ellipse", (0.15, 0.25, 0.85, 0.85)),
            (B, "polygon", (0, 0.2, 0.25, 0.45, 0.15, 0.6)),
            ("lamp_y", "polygon", (0.82, 0.45, 1, 0.55, 0.82, 0.62)),
            ("dark", "ellipse", (0.62, 0.38, 0.72, 0.5)),
        ),
    ),
    Category(
        17,
        "cat",
        "animal",
        1.0,
        (14, 17),
        2,
        (("gray", 2), ("black", 1), ("white", 1), ("brown", 1)),
        "hstripes",
        (
            (B, "ellipse", (0.05, 0.25, 0.95, 1)),
            (B, "polygon", (0.08, 0.45, 0.15, 0, 0.42, 0.3)),
            (B, "polygon", (0.58, 0.3, 0.85, 0, 0.92, 0.45)),
            ("lamp_g", "ellipse", (0.25, 0.5, 0.4, 0.65)),
            ("lamp_g", "ellipse", (0.6, 0.5, 0.75, 0.65)),
        ),
    ),
    Category(
        18,
        "dog",
        "animal",
        1.4,
        (14, 17),
        2,
        (("brown", 3), ("black", 1), ("white", 1)),
        "dots",
        (
            (B, "ellipse", (0.1, 0.3, 0.8, 0.75)),
            (B, "ellipse", (0.65, 0.05, 1, 0.45)),
            ("dark", "ellipse", (0.62, 0.08, 0.78, 0.4)),
            (B, "rect", (0.15, 0.65, 0.27, 1)),
            (B, "rect", (0.6, 0.65, 0.72, 1)),
            (B, "line", (0.12, 0.4, 0, 0.15), 0.08),
        ),
    ),
    Category(
        28,
        "umbrella",
        "accessory",
        1.2,
        (14, 17),
        2,
        (("red", 1), ("blue", 1), ("purple", 1), ("black", 1)),
        "vstripes",
        (
            (B, "pie", (0, 0, 1, 0.9), 180, 360),
            ("dark", "line", (0.5, 0.44, 0.5, 0.95, 0.62, 0.95), 0.07),
        ),
    ),
    Category(
        34,
        "frisbee",
        "sports",
        1.4,
        (14, 17),
        2,
        (("red", 1), ("yellow", 1), ("pink", 1), ("white", 1)),
        "solid",
        (
            (B, "ellipse", (0, 0, 1, 1)),
            ("dark", "ellipse", (0.3, 0.3, 0.7, 0.7)),
            (B, "ellipse", (0.38, 0.38, 0.62, 0.62)),
        ),
    ),
    Category(
        38,
        "kite",
        "sports",
        0.8,
        (14, 17),
        2,
        (("red", 1), ("yellow", 1), ("purple", 1), ("pink", 1)),
        "checker",
        (
            (B, "polygon", (0.5, 0, 1, 0.35, 0.5, 0.75, 0, 0.35)),
            ("dark", "line", (0.5, 0.75, 0.4, 0.88, 0.6, 1), 0.05),
        ),
    ),
    Category(
        44,
        "bottle",
        "kitchen",
        0.4,
        (14, 17),
        3,
        (("green", 2), ("brown", 1), ("white", 1), ("blue", 1)),
        "solid",
        (
            (B, "rect", (0, 0.35, 1, 1)),
            (B, "polygon", (0, 0.36, 0.3, 0.15, 0.7, 0.15, 1, 0.36)),
            (B, "rect", (0.3, 0, 0.7, 0.2)),
            ("light", "rect", (0.1, 0.55, 0.9, 0.8)),
        ),
    ),
    Category(
        47,
        "cup",
        "kitchen",
        1.0,
        (14, 17),
        3,
        (("white", 3), ("red", 1), ("blue", 1)),
        "solid",
        (
            (B, "polygon", (0, 0, 0.75, 0, 0.65, 1, 0.1, 1)),
            ("dark", "ellipse", (0.65, 0.2, 1, 0.7)),
            (B, "ellipse", (0.7, 0.3, 0.9, 0.6)),
            ("dark", "rect", (0.05, 0, 0.7, 0.12)),
        ),
    ),
    Category(
        51,
        "bowl",
        "kitchen",
        1.6,
        (14, 17),
        2,
        (("white", 2), ("blue", 1), ("green", 1)),
        "hstripes",
        (
            (B, "pie", (0, -0.9, 1, 1), 0, 180),
            ("dark", "rect", (0, 0, 1, 0.12)),
        ),
    ),
    Category(
        52,
        "banana",
        "food",
        1.4,
        (14, 17),
        3,
        (("yellow", 4), ("green", 1)),
        "solid",
        (
            (B, "polygon", (0, 0.15, 0.25, 0.65, 0.6, 0.8, 1, 0.55, 1, 0.75, 0.6, 1, 0.2, 0.85, 0, 0.4)),
            ("dark", "rect", (0, 0.1, 0.1, 0.3)),
        ),
    ),
    Category(
        62,
        "chair",
        "furniture",
        0.8,
        (14, 19),
        3,
        (("brown", 3), ("black", 1), ("red", 1)),
        "vstripes",
        (
            (B, "rect", (0.6, 0, 0.85, 0.6)),
            (B, "rect", (0.1, 0.5, 0.85, 0.65)),
            (B, "rect", (0.1, 0.65, 0.2, 1)),
            (B, "rect", (0.75, 0.65, 0.85, 1)),
        ),
    ),
    Category(
        63,
        "couch",
        "furniture",
        2.0,
        (15, 20),
        1,
        (("red", 2), ("blue", 1), ("green", 1), ("brown", 2)),
        "checker",
        (
            (B, "rect", (0.1, 0, 0.9, 0.5)),
            (B, "rect", (0, 0.3, 0.15, 0.9)),
            (B, "rect", (0.85, 0.3, 1, 0.9)),
            (B, "rect", (0.1, 0.5, 0.9, 0.85)),
            ("dark", "rect", (0.05, 0.9, 0.12, 1)),
            ("dark", "rect", (0.88, 0.9, 0.95, 1)),
        ),
    ),
    Category(
        64,
        "potted plant",
        "furniture",
        0.8,
        (14, 18),
        2,
        (("brown", 2), ("white", 1), ("red", 1), ("blue", 1)),
        "hstripes",
        (
            ("leaf", "ellipse", (0, 0, 0.55, 0.45)),
            ("leaf", "ellipse", (0.45, 0, 1, 0.45)),
            ("leaf", "ellipse", (0.2, 0.15, 0.8, 0.6)),
            (B, "polygon", (0.1, 0.55, 0.9, 0.55, 0.75, 1, 0.25, 1)),
        ),
    ),
    Category(
        72,
        "tv",
        "electronic",
        1.4,
        (14, 18),
        1,
        (("black", 3), ("gray", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 0.82)),
            ("screen", "rect", (0.08, 0.08, 0.92, 0.74)),
            ("light", "line", (0.2, 0.2, 0.4, 0.2), 0.06),
            ("dark", "rect", (0.35, 0.82, 0.65, 0.9)),
            ("dark", "rect", (0.2, 0.9, 0.8, 1)),
        ),
    ),
    Category(
        73,
        "laptop",
        "electronic",
        1.3,
        (14, 17),
        2,
        (("gray", 3), ("black", 2), ("white", 1)),
        "solid",
        (
            (B, "rect", (0.12, 0, 0.88, 0.6)),
            ("screen", "rect", (0.18, 0.07, 0.82, 0.53)),
            (B, "polygon", (0.12, 0.62, 0.88, 0.62, 1, 1, 0, 1)),
        ),
    ),
    Category(
        74,
        "mouse",
        "electronic",
        1.3,
        (14, 17),
        2,
        (("gray", 2), ("black", 1), ("white", 2)),
        "solid",
        (
            (B, "ellipse", (0, 0, 1, 1)),
            ("dark", "line", (0.5, 0, 0.5, 0.45), 0.1),
            ("dark", "line", (0, 0.45, 1, 0.45), 0.08),
        ),
    ),
    Category(
        75,
        "remote",
        "electronic",
        0.4,
        (14, 17),
        2,
        (("black", 3), ("gray", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("lamp_r", "ellipse", (0.3, 0.05, 0.7, 0.18)),
            ("light", "rect", (0.2, 0.3, 0.4, 0.4)),
            ("light", "rect", (0.6, 0.3, 0.8, 0.4)),
            ("light", "rect", (0.2, 0.5, 0.4, 0.6)),
            ("light", "rect", (0.6, 0.5, 0.8, 0.6)),
            ("light", "rect", (0.2, 0.7, 0.4, 0.8)),
            ("light", "rect", (0.6, 0.7, 0.8, 0.8)),
        ),
    ),
    Category(
        76,
        "keyboard",
        "electronic",
        2.5,
        (14, 17),
        1,
        (("black", 2), ("white", 2), ("gray", 1)),
        "checker",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("dark", "rect", (0, 0, 1, 0.1)),
            ("dark", "rect", (0.25, 0.78, 0.75, 0.92)),
        ),
    ),
    Category(
        77,
        "cell phone",
        "electronic",
        0.55,
        (14, 17),
        2,
        (("black", 3), ("white", 1), ("pink", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("glass", "rect", (0.14, 0.1, 0.86, 0.8)),
            ("dark", "ellipse", (0.38, 0.84, 0.62, 0.96)),
        ),
    ),
    Category(
        78,
        "microwave",
        "appliance",
        1.5,
        (14, 17),
        1,
        (("white", 2), ("black", 2), ("gray", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("screen", "rect", (0.07, 0.12, 0.65, 0.88)),
            ("dark", "rect", (0.74, 0.15, 0.92, 0.3)),
            ("dark", "ellipse", (0.76, 0.45, 0.9, 0.62)),
            ("dark", "ellipse", (0.76, 0.7, 0.9, 0.87)),
        ),
    ),
    Category(
        79,
        "oven",
        "appliance",
        1.0,
        (18, 23),
        1,
        (("black", 2), ("white", 2), ("gray", 2)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("dark", "ellipse", (0.08, 0.04, 0.28, 0.16)),
            ("dark", "ellipse", (0.3, 0.04, 0.5, 0.16)),
            ("dark", "ellipse", (0.52, 0.04, 0.72, 0.16)),
            ("dark", "ellipse", (0.74, 0.04, 0.94, 0.16)),
            ("screen", "rect", (0.12, 0.38, 0.88, 0.88)),
            ("light", "rect", (0.2, 0.26, 0.8, 0.31)),
        ),
    ),
    Category(
        81,
        "sink",
        "appliance",
        1.5,
        (14, 17),
        1,
        (("white", 3), ("gray", 2)),
        "solid",
        (
            ("dark", "line", (0.45, 0.45, 0.45, 0.05, 0.75, 0.05, 0.75, 0.22), 0.08),
            (B, "polygon", (0, 0.45, 1, 0.45, 0.85, 1, 0.15, 1)),
            ("glass", "rect", (0.15, 0.5, 0.85, 0.62)),
        ),
    ),
    Category(
        82,
        "refrigerator",
        "appliance",
        0.55,
        (26, 32),
        1,
        (("white", 3), ("gray", 2), ("black", 1)),
        "solid",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("dark", "rect", (0, 0.35, 1, 0.38)),
            ("dark", "rect", (0.78, 0.12, 0.88, 0.3)),
            ("dark", "rect", (0.78, 0.45, 0.88, 0.7)),
        ),
    ),
    Category(
        84,
        "book",
        "indoor",
        0.75,
        (14, 17),
        3,
        (("red", 2), ("blue", 2), ("green", 1), ("yellow", 1)),
        "hstripes",
        (
            (B, "rect", (0, 0, 1, 1)),
            ("light", "rect", (0.85, 0.05, 1, 0.95)),
            ("dark", "rect", (0, 0, 0.12, 1)),
        ),
    ),
    Category(
        85,
        "clock",
        "indoor",
        1.0,
        (14, 17),
        1,
        (("white", 2), ("black", 1), ("yellow", 1)),
        "solid",
        (
            (B, "ellipse", (0, 0, 1, 1)),
            ("light", "ellipse", (0.15, 0.15, 0.85, 0.85)),
            ("dark", "line", (0.5, 0.5, 0.5, 0.2), 0.08),
            ("dark", "line", (0.5, 0.5, 0.72, 0.5), 0.08),
        ),
    ),
)

CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}


@dataclass(frozen=True)
class Scene:
    """A scene type: its background and its co-occurrence structure."""

    name: str
    core: tuple[str, ...]  # usually all present together
    extras: tuple[str, ...]  # present now and then
    background: str  # backdrop kind drawn by render.background
    phrase: str  # how texts name it ("living room")


SCENES: tuple[Scene, ...] = (
    Scene(
        "kitchen",
        ("oven", "refrigerator", "sink", "microwave"),
        ("bowl", "cup", "bottle", "banana", "person", "chair"),
        "kitchen",
        "kitchen",
    ),
    Scene(
        "street",
        ("car", "traffic light", "stop sign", "person"),
        ("truck", "bicycle", "motorcycle", "umbrella"),
        "street",
        "street",
    ),
    Scene(
        "office",
        ("laptop", "keyboard", "mouse", "chair"),
        ("cell phone", "cup", "book", "bottle", "person"),
        "office",
        "office",
    ),
    Scene(
        "living room",
        ("couch", "tv", "remote", "potted plant"),
        ("clock", "book", "cat", "chair", "person", "cup"),
        "living_room",
        "living room",
    ),
    Scene("park", ("bench", "dog", "frisbee", "person"), ("bird", "kite", "bicycle", "umbrella"), "park", "park"),
)

SCENE_BY_NAME: dict[str, Scene] = {s.name: s for s in SCENES}

# Sampling rates (per image unless stated); see sampling.py for how they are used.
RATES = {
    "break": 0.5,  # image drops 1 (or, 2 times in 5, 2) core categories of its scene
    "break_two": 0.4,
    "extra": 0.25,  # each extra category of the scene, independently
    "outsider": 0.12,  # one category from another scene
    "count2": 0.2,  # instance count 2 (when the category allows it)
    "count3": 0.08,  # instance count 3
    "small": 0.12,  # per instance: drawn at ~60% size
    "faint": 0.1,  # per instance: low contrast (alpha 0.35-0.5, no outline)
    "occluder": 0.15,  # per instance: placed to cover part of an earlier one
    "hidden": 0.015,  # per instance: practically invisible (tiny and alpha 0.1)
    "caption_noise": 0.6,  # per train image: its canonical caption also names an absent usual partner (annotator error)
}
MAX_CATEGORIES = 6
MAX_INSTANCES = 9
