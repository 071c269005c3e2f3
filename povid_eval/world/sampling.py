"""Scene sampling: which categories an image holds (co-occurrence), their counts, colours, sizes and layout.

Per image (rates in catalog.RATES):
    scene      uniform over the scene types
    core       all four core categories, except in a "break" image (50%), which drops one of them (or two,
               two breaks in five); the dropped ones are recorded as ``missing``
    extras     each extra category of the scene with probability 0.25; one outsider (a category of another
               scene) with probability 0.12; at most 6 categories (extras and outsiders give way first)
    count      1, 2 (20%) or 3 (8%) instances, within the category's max_count; at most 9 instances
    colour     one per category (its instances share it): the category's usual colours by weight, a uniform
               palette colour 10% of the time
    instance   normal size, or small (12%, ~60%); faint (10%, alpha 0.35-0.5, no outline); an occluder (15%)
               is placed over part of an earlier instance; hidden (1.5%) = tiny and alpha 0.1
Layout is in pixels of the 64 x 64 image; instances are drawn in list order (later ones cover earlier ones).
Everything is drawn from the ``random.Random`` passed in, so an image is a pure function of its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from povid_eval.world.catalog import (
    CATEGORIES,
    CATEGORY_BY_NAME,
    IMAGE_SIZE,
    MAX_CATEGORIES,
    MAX_INSTANCES,
    PALETTE,
    RATES,
    SCENES,
    Scene,
)

MAX_OVERLAP = 0.08  # ordinary instances: intersection / smaller box area, with every earlier instance
OCCLUDE = (0.2, 0.5)  # an occluder covers this share of one earlier instance's box


@dataclass(frozen=True)
class Instance:
    """One drawn object: bbox = (x, y, w, h) in pixels, alpha 1.0 unless faint or hidden."""

    category: str
    colour: str
    bbox: tuple[int, int, int, int]
    small: bool
    faint: bool
    hidden: bool
    alpha: float


@dataclass(frozen=True)
class Layout:
    scene: str
    missing: tuple[str, ...]  # core categories dropped on purpose (a co-occurrence break)
    counts: dict[str, int]  # category -> number of instances, in sampling order
    instances: tuple[Instance, ...]  # in drawing order


def sample_categories(
    rng: random.Random, scene: Scene, drop: tuple[str, ...] = (), include: tuple[str, ...] = ()
) -> tuple[list[str], tuple[str, ...]]:
    """The categories of one image of ``scene`` (core first) and the core categories it misses. ``drop``
    forces a break that misses exactly those core categories; ``include`` forces those extras in."""
    missing: tuple[str, ...] = tuple(drop)
    if not drop and rng.random() < RATES["break"]:
        k = 2 if rng.random() < RATES["break_two"] else 1
        missing = tuple(rng.sample(scene.core, k))
    core = [c for c in scene.core if c not in missing]
    optional = [e for e in scene.extras if (rng.random() < RATES["extra"] or e in include) and e not in missing]
    if rng.random() < RATES["outsider"]:
        pool = sorted({c.name for c in CATEGORIES} - set(scene.core) - set(scene.extras) - set(missing))
        optional.append(rng.choice(pool))
    while len(core) + len(optional) > MAX_CATEGORIES:
        optional.remove(rng.choice([o for o in optional if o not in include]))
    return core + optional, missing


def sample_counts(rng: random.Random, names: list[str]) -> dict[str, int]:
    counts = {}
    for name in names:
        r = rng.random()
        n = 3 if r < RATES["count3"] else 2 if r < RATES["count3"] + RATES["count2"] else 1
        counts[name] = min(n, CATEGORY_BY_NAME[name].max_count)
    while sum(counts.values()) > MAX_INSTANCES:
        biggest = max(counts, key=lambda k: (counts[k], k))
        counts[biggest] -= 1
    return counts


def sample_colour(rng: random.Random, name: str) -> str:
    if rng.random() < 0.1:
        return rng.choice(sorted(PALETTE))
    names, weights = zip(*CATEGORY_BY_NAME[name].colours)
    return rng.choices(names, weights=weights)[0]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _area(b) -> int:
    return b[2] * b[3]


def place(
    rng: random.Random, size: tuple[int, int], placed: list[tuple[int, int, int, int]], occluder: bool, tries: int = 40
) -> tuple[int, int, int, int]:
    """A box of ``size`` that overlaps earlier boxes little (or, for an occluder, covers part of one)."""
    w, h = size
    best, best_cost = None, float("inf")
    for _ in range(tries):
        box = (rng.randint(0, IMAGE_SIZE - w), rng.randint(0, IMAGE_SIZE - h), w, h)
        shares = [_overlap(box, p) / min(_area(box), _area(p)) for p in placed]
        covered = [_overlap(box, p) / _area(p) for p in placed]
        if occluder:
            hits = [i for i, c in enumerate(covered) if OCCLUDE[0] <= c <= OCCLUDE[1]]
            others = [s for i, s in enumerate(shares) if i not in hits]
            if len(hits) == 1 and all(s <= MAX_OVERLAP for s in others):
                return box
        cost = max(shares, default=0.0)
        if cost <= MAX_OVERLAP and not occluder:
            return box
        if cost < best_cost:
            best, best_cost = box, cost
    return best


def instance_size(rng: random.Random, name: str, small: bool) -> tuple[int, int]:
    cat = CATEGORY_BY_NAME[name]
    h = rng.uniform(*cat.height) * (rng.uniform(0.55, 0.65) if small else 1.0)
    w = h * cat.aspect
    scale = min(1.0, 44 / w, 40 / h)
    return max(4, round(w * scale)), max(4, round(h * scale))


def sample_layout(
    rng: random.Random, scene: Scene | None = None, drop: tuple[str, ...] = (), include: tuple[str, ...] = ()
) -> Layout:
    """One image's content and layout (see module docstring); ``drop``, ``include``: see sample_categories."""
    scene = scene or rng.choice(SCENES)
    names, missing = sample_categories(rng, scene, drop, include)
    counts = sample_counts(rng, names)
    colours = {name: sample_colour(rng, name) for name in names}
    todo = [name for name in names for _ in range(counts[name])]
    rng.shuffle(todo)
    placed: list[tuple[int, int, int, int]] = []
    instances = []
    for name in todo:
        hidden = rng.random() < RATES["hidden"]
        small = hidden or rng.random() < RATES["small"]
        faint = not hidden and rng.random() < RATES["faint"]
        occluder = bool(placed) and not hidden and rng.random() < RATES["occluder"]
        box = place(rng, instance_size(rng, name, small), placed, occluder)
        alpha = 0.1 if hidden else round(rng.uniform(0.35, 0.5), 3) if faint else 1.0
        placed.append(box)
        instances.append(Instance(name, colours[name], box, small, faint, hidden, alpha))
    return Layout(scene=scene.name, missing=missing, counts=counts, instances=tuple(instances))
