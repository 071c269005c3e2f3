"""What the synthetic world contains: COCO categories (real names and ids), the colour palette, the scene
types with their co-occurrence structure, and each category's glyph (data only, no logic).

Co-occurrence: every scene has a CORE of four categories that appear together in most images of the scene
(the language prior a captioner learns) and a few EXTRAS that appear now and then. Some images drop one or
two core categories on purpose (a "break"): a model that trusts the prior more than the pixels names them.

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
    aspect: float                  # width / height of the glyph box
    height: tuple[int, int]        # glyph height range in pixels (64 x 64 image), normal size
    max_count: int                 # at most this many instances in one image
    colours: tuple[tuple[str, float], ...]   # (palette name, weight): the category's usual colours
    texture: str                   # solid | hstripes | vstripes | dots | checker | diagonal
    shapes: tuple[tuple, ...]      # ("body"|ink, shape, coords[, width]) in the unit box


# Named colours, RGB. No "orange": it is a COCO category and would read as the fruit in a caption.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "green": (45, 160, 60), "blue": (45, 85, 205), "yellow": (235, 205, 35),
    "white": (245, 245, 245), "black": (28, 28, 28), "brown": (135, 80, 35), "gray": (130, 130, 135),
    "pink": (245, 135, 185), "purple": (135, 55, 175),
}

# Inks of glyph details (fixed, whatever the object's colour).
INKS: dict[str, tuple[int, int, int]] = {
    "dark": (35, 35, 40), "light": (235, 235, 230), "glass": (130, 185, 225), "screen": (55, 70, 95),
    "leaf": (40, 140, 45), "skin": (225, 180, 140), "lamp_r": (235, 40, 30), "lamp_y": (245, 200, 30),
    "lamp_g": (40, 200, 70), "soil": (95, 60, 30),
}

B = "body"

CATEGORIES: tuple[Category, ...] = (
    Category(1, "person", "person", 0.5, (16, 24), 3,
        (("blue", 3), ("red", 2), ("green", 2), ("purple", 1), ("black", 1)), "solid", (
        (B, "polygon", (.2, .3, .8, .3, .9, .72, .1, .72)), (B, "rect", (.22, .7, .42, 1)),
        (B, "rect", (.58, .7, .78, 1)), ("skin", "ellipse", (.25, 0, .75, .3)),
    )),
    Category(2, "bicycle", "vehicle", 1.5, (11, 15), 2, (("red", 2), ("blue", 2), ("black", 1)), "solid", (
        ("dark", "ellipse", (0, .45, .4, 1)), ("dark", "ellipse", (.6, .45, 1, 1)),
        ("light", "ellipse", (.08, .55, .32, .9)), ("light", "ellipse", (.68, .55, .92, .9)),
        (B, "line", (.2, .72, .45, .25, .8, .72, .2, .72), .12), (B, "line", (.4, .2, .58, .2), .12),
    )),
    Category(3, "car", "vehicle", 1.7, (11, 15), 3,
        (("red", 3), ("blue", 2), ("white", 2), ("black", 1), ("gray", 2)), "solid", (
        (B, "rect", (0, .38, 1, .8)), (B, "polygon", (.2, .4, .3, .05, .7, .05, .82, .4)),
        ("glass", "polygon", (.3, .38, .36, .14, .64, .14, .72, .38)), ("dark", "ellipse", (.1, .62, .34, 1)),
        ("dark", "ellipse", (.66, .62, .9, 1)),
    )),
    Category(4, "motorcycle", "vehicle", 1.5, (10, 14), 2, (("black", 2), ("red", 2), ("blue", 1)), "diagonal", (
        ("dark", "ellipse", (0, .5, .36, 1)), ("dark", "ellipse", (.64, .5, 1, 1)),
        (B, "polygon", (.2, .35, .75, .35, .85, .65, .15, .65)), (B, "line", (.72, .35, .82, .05), .1),
        ("dark", "rect", (.3, .22, .6, .35)),
    )),
    Category(8, "truck", "vehicle", 1.8, (14, 19), 2,
        (("white", 2), ("red", 1), ("blue", 1), ("gray", 2)), "vstripes", (
        (B, "rect", (0, 0, .66, .78)), (B, "rect", (.68, .3, 1, .78)), ("glass", "rect", (.74, .36, .94, .55)),
        ("dark", "ellipse", (.06, .66, .26, 1)), ("dark", "ellipse", (.74, .66, .94, 1)),
    )),
    Category(10, "traffic light", "outdoor", 0.4, (14, 20), 2, (("black", 3), ("yellow", 1)), "solid", (
        (B, "rect", (0, 0, 1, .88)), ("dark", "rect", (.4, .88, .6, 1)), ("lamp_r", "ellipse", (.18, .04, .82, .3)),
        ("lamp_y", "ellipse", (.18, .31, .82, .57)), ("lamp_g", "ellipse", (.18, .58, .82, .84)),
    )),
    Category(13, "stop sign", "outdoor", 1.0, (10, 14), 1, (("red", 1),), "solid", (
        (B, "polygon", (.3, 0, .7, 0, 1, .3, 1, .7, .7, 1, .3, 1, 0, .7, 0, .3)),
        ("light", "rect", (.15, .42, .85, .58)),
    )),
    Category(15, "bench", "outdoor", 2.0, (10, 13), 2, (("brown", 3), ("green", 1), ("gray", 1)), "hstripes", (
        (B, "rect", (0, 0, 1, .3)), (B, "rect", (0, .42, 1, .62)), ("dark", "rect", (.06, .62, .14, 1)),
        ("dark", "rect", (.86, .62, .94, 1)),
    )),
    Category(16, "bird", "animal", 1.3, (7, 10), 3, (("blue", 2), ("red", 1), ("brown", 2), ("black", 1)), "solid", (
        (B, "ellipse", (.15, .25, .85, .85)), (B, "polygon", (0, .2, .25, .45, .15, .6)),
        ("lamp_y", "polygon", (.82, .45, 1, .55, .82, .62)), ("dark", "ellipse", (.62, .38, .72, .5)),
    )),
    Category(17, "cat", "animal", 1.0, (9, 12), 2,
        (("gray", 2), ("black", 1), ("white", 1), ("brown", 1)), "hstripes", (
        (B, "ellipse", (.05, .25, .95, 1)), (B, "polygon", (.08, .45, .15, 0, .42, .3)),
        (B, "polygon", (.58, .3, .85, 0, .92, .45)), ("lamp_g", "ellipse", (.25, .5, .4, .65)),
        ("lamp_g", "ellipse", (.6, .5, .75, .65)),
    )),
    Category(18, "dog", "animal", 1.4, (10, 13), 2, (("brown", 3), ("black", 1), ("white", 1)), "dots", (
        (B, "ellipse", (.1, .3, .8, .75)), (B, "ellipse", (.65, .05, 1, .45)),
        ("dark", "ellipse", (.62, .08, .78, .4)), (B, "rect", (.15, .65, .27, 1)), (B, "rect", (.6, .65, .72, 1)),
        (B, "line", (.12, .4, 0, .15), .08),
    )),
    Category(28, "umbrella", "accessory", 1.2, (12, 15), 2,
        (("red", 1), ("blue", 1), ("purple", 1), ("black", 1)), "vstripes", (
        (B, "pie", (0, 0, 1, .9), 180, 360), ("dark", "line", (.5, .44, .5, .95, .62, .95), .07),
    )),
    Category(34, "frisbee", "sports", 1.4, (6, 8), 2,
        (("red", 1), ("yellow", 1), ("pink", 1), ("white", 1)), "solid", (
        (B, "ellipse", (0, 0, 1, 1)), ("dark", "ellipse", (.3, .3, .7, .7)), (B, "ellipse", (.38, .38, .62, .62)),
    )),
    Category(38, "kite", "sports", 0.8, (12, 15), 2,
        (("red", 1), ("yellow", 1), ("purple", 1), ("pink", 1)), "checker", (
        (B, "polygon", (.5, 0, 1, .35, .5, .75, 0, .35)), ("dark", "line", (.5, .75, .4, .88, .6, 1), .05),
    )),
    Category(44, "bottle", "kitchen", 0.4, (11, 15), 3,
        (("green", 2), ("brown", 1), ("white", 1), ("blue", 1)), "solid", (
        (B, "rect", (0, .35, 1, 1)), (B, "polygon", (0, .36, .3, .15, .7, .15, 1, .36)),
        (B, "rect", (.3, 0, .7, .2)), ("light", "rect", (.1, .55, .9, .8)),
    )),
    Category(47, "cup", "kitchen", 1.0, (8, 10), 3, (("white", 3), ("red", 1), ("blue", 1)), "solid", (
        (B, "polygon", (0, 0, .75, 0, .65, 1, .1, 1)), ("dark", "ellipse", (.65, .2, 1, .7)),
        (B, "ellipse", (.7, .3, .9, .6)), ("dark", "rect", (.05, 0, .7, .12)),
    )),
    Category(51, "bowl", "kitchen", 1.6, (7, 9), 2, (("white", 2), ("blue", 1), ("green", 1)), "hstripes", (
        (B, "pie", (0, -.9, 1, 1), 0, 180), ("dark", "rect", (0, 0, 1, .12)),
    )),
    Category(52, "banana", "food", 1.4, (7, 10), 3, (("yellow", 4), ("green", 1)), "solid", (
        (B, "polygon", (0, .15, .25, .65, .6, .8, 1, .55, 1, .75, .6, 1, .2, .85, 0, .4)),
        ("dark", "rect", (0, .1, .1, .3)),
    )),
    Category(62, "chair", "furniture", 0.8, (14, 19), 3, (("brown", 3), ("black", 1), ("red", 1)), "vstripes", (
        (B, "rect", (.6, 0, .85, .6)), (B, "rect", (.1, .5, .85, .65)), (B, "rect", (.1, .65, .2, 1)),
        (B, "rect", (.75, .65, .85, 1)),
    )),
    Category(63, "couch", "furniture", 2.0, (15, 20), 1,
        (("red", 2), ("blue", 1), ("green", 1), ("brown", 2)), "checker", (
        (B, "rect", (.1, 0, .9, .5)), (B, "rect", (0, .3, .15, .9)), (B, "rect", (.85, .3, 1, .9)),
        (B, "rect", (.1, .5, .9, .85)), ("dark", "rect", (.05, .9, .12, 1)), ("dark", "rect", (.88, .9, .95, 1)),
    )),
    Category(64, "potted plant", "furniture", 0.8, (14, 18), 2,
        (("brown", 2), ("white", 1), ("red", 1), ("blue", 1)), "hstripes", (
        ("leaf", "ellipse", (0, 0, .55, .45)), ("leaf", "ellipse", (.45, 0, 1, .45)),
        ("leaf", "ellipse", (.2, .15, .8, .6)), (B, "polygon", (.1, .55, .9, .55, .75, 1, .25, 1)),
    )),
    Category(72, "tv", "electronic", 1.4, (13, 18), 1, (("black", 3), ("gray", 1)), "solid", (
        (B, "rect", (0, 0, 1, .82)), ("screen", "rect", (.08, .08, .92, .74)),
        ("light", "line", (.2, .2, .4, .2), .06), ("dark", "rect", (.35, .82, .65, .9)),
        ("dark", "rect", (.2, .9, .8, 1)),
    )),
    Category(73, "laptop", "electronic", 1.3, (11, 15), 2, (("gray", 3), ("black", 2), ("white", 1)), "solid", (
        (B, "rect", (.12, 0, .88, .6)), ("screen", "rect", (.18, .07, .82, .53)),
        (B, "polygon", (.12, .62, .88, .62, 1, 1, 0, 1)),
    )),
    Category(74, "mouse", "electronic", 1.3, (6, 8), 2, (("gray", 2), ("black", 1), ("white", 2)), "solid", (
        (B, "ellipse", (0, 0, 1, 1)), ("dark", "line", (.5, 0, .5, .45), .1),
        ("dark", "line", (0, .45, 1, .45), .08),
    )),
    Category(75, "remote", "electronic", 0.4, (10, 13), 2, (("black", 3), ("gray", 1)), "solid", (
        (B, "rect", (0, 0, 1, 1)), ("lamp_r", "ellipse", (.3, .05, .7, .18)), ("light", "rect", (.2, .3, .4, .4)),
        ("light", "rect", (.6, .3, .8, .4)), ("light", "rect", (.2, .5, .4, .6)),
        ("light", "rect", (.6, .5, .8, .6)), ("light", "rect", (.2, .7, .4, .8)),
        ("light", "rect", (.6, .7, .8, .8)),
    )),
    Category(76, "keyboard", "electronic", 2.5, (7, 9), 1, (("black", 2), ("white", 2), ("gray", 1)), "checker", (
        (B, "rect", (0, 0, 1, 1)), ("dark", "rect", (0, 0, 1, .1)), ("dark", "rect", (.25, .78, .75, .92)),
    )),
    Category(77, "cell phone", "electronic", 0.55, (9, 12), 2, (("black", 3), ("white", 1), ("pink", 1)), "solid", (
        (B, "rect", (0, 0, 1, 1)), ("glass", "rect", (.14, .1, .86, .8)), ("dark", "ellipse", (.38, .84, .62, .96)),
    )),
    Category(78, "microwave", "appliance", 1.5, (12, 15), 1, (("white", 2), ("black", 2), ("gray", 1)), "solid", (
        (B, "rect", (0, 0, 1, 1)), ("screen", "rect", (.07, .12, .65, .88)), ("dark", "rect", (.74, .15, .92, .3)),
        ("dark", "ellipse", (.76, .45, .9, .62)), ("dark", "ellipse", (.76, .7, .9, .87)),
    )),
    Category(79, "oven", "appliance", 1.0, (18, 23), 1, (("black", 2), ("white", 2), ("gray", 2)), "solid", (
        (B, "rect", (0, 0, 1, 1)), ("dark", "ellipse", (.08, .04, .28, .16)),
        ("dark", "ellipse", (.3, .04, .5, .16)), ("dark", "ellipse", (.52, .04, .72, .16)),
        ("dark", "ellipse", (.74, .04, .94, .16)), ("screen", "rect", (.12, .38, .88, .88)),
        ("light", "rect", (.2, .26, .8, .31)),
    )),
    Category(81, "sink", "appliance", 1.5, (11, 14), 1, (("white", 3), ("gray", 2)), "solid", (
        ("dark", "line", (.45, .45, .45, .05, .75, .05, .75, .22), .08),
        (B, "polygon", (0, .45, 1, .45, .85, 1, .15, 1)), ("glass", "rect", (.15, .5, .85, .62)),
    )),
    Category(82, "refrigerator", "appliance", 0.55, (26, 32), 1, (("white", 3), ("gray", 2), ("black", 1)), "solid", (
        (B, "rect", (0, 0, 1, 1)), ("dark", "rect", (0, .35, 1, .38)), ("dark", "rect", (.78, .12, .88, .3)),
        ("dark", "rect", (.78, .45, .88, .7)),
    )),
    Category(84, "book", "indoor", 0.75, (9, 12), 3,
        (("red", 2), ("blue", 2), ("green", 1), ("yellow", 1)), "hstripes", (
        (B, "rect", (0, 0, 1, 1)), ("light", "rect", (.85, .05, 1, .95)), ("dark", "rect", (0, 0, .12, 1)),
    )),
    Category(85, "clock", "indoor", 1.0, (10, 13), 1, (("white", 2), ("black", 1), ("yellow", 1)), "solid", (
        (B, "ellipse", (0, 0, 1, 1)), ("light", "ellipse", (.15, .15, .85, .85)),
        ("dark", "line", (.5, .5, .5, .2), .08), ("dark", "line", (.5, .5, .72, .5), .08),
    )),
)

CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}


@dataclass(frozen=True)
class Scene:
    """A scene type: its background and its co-occurrence structure."""

    name: str
    core: tuple[str, ...]      # usually all present together
    extras: tuple[str, ...]    # present now and then
    background: str            # backdrop kind drawn by render.background
    phrase: str                # how texts name it ("living room")


SCENES: tuple[Scene, ...] = (
    Scene("kitchen", ("oven", "refrigerator", "sink", "microwave"), ("bowl", "cup", "bottle", "banana"),
          "kitchen", "kitchen"),
    Scene("street", ("car", "traffic light", "stop sign", "person"), ("truck", "bicycle", "motorcycle", "umbrella"),
          "street", "street"),
    Scene("office", ("laptop", "keyboard", "mouse", "chair"), ("cell phone", "cup", "book", "bottle"),
          "office", "office"),
    Scene("living room", ("couch", "tv", "remote", "potted plant"), ("clock", "book", "cat", "chair"),
          "living_room", "living room"),
    Scene("park", ("bench", "dog", "frisbee", "person"), ("bird", "kite", "bicycle", "umbrella"),
          "park", "park"),
)

SCENE_BY_NAME: dict[str, Scene] = {s.name: s for s in SCENES}

# Sampling rates (per image unless stated); see sampling.py for how they are used.
RATES = {
    "break": 0.3,          # image drops 1 (or, 1 time in 4, 2) core categories of its scene
    "break_two": 0.25,
    "extra": 0.3,          # each extra category of the scene, independently
    "outsider": 0.12,      # one category from another scene
    "count2": 0.2,         # instance count 2 (when the category allows it)
    "count3": 0.08,        # instance count 3
    "small": 0.12,         # per instance: drawn at ~60% size
    "faint": 0.1,          # per instance: low contrast (alpha 0.35-0.5, no outline)
    "occluder": 0.15,      # per instance: placed to cover part of an earlier one
    "hidden": 0.015,       # per instance: practically invisible (tiny and alpha 0.1)
}
MAX_CATEGORIES = 6
MAX_INSTANCES = 9
