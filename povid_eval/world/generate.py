"""One world image from its seed: layout -> pixels -> per-instance visibility -> objects -> reference captions.

Visibility of an instance (from the render's visible fraction f and the sampling flags), first match wins:

    hidden     drawn practically invisible (tiny, alpha 0.1), or f < 0.3
    occluded   f < 0.8 (partly covered by a later instance)
    faint      low contrast
    small      drawn at ~60% size
    clear      otherwise

An object (a category in an image) is ``clear`` when one of its instances is, ``weak`` when none is clear but
one is not hidden, ``hidden`` otherwise. Captions never name hidden objects. The first caption is the
canonical one: "A {scene} with {list}." naming every other object in the catalog's category order
(canonical_order) with its count and colour, under the category's own name. Training captions are noisy the
way detailed-caption data is: in 60% of the train images (RATES["caption_noise"]) the canonical caption also
names one absent usual partner of the scene (noise_partner) after the objects it lists, as an annotator who
adds what such a scene usually holds; a captioner trained on them learns to go on, once it has named what it
sees, with partners it cannot see: the language prior's hallucination, which POVID is meant to remove. (With
the objects left to right and the slip at a random place in the list, the tiny base's hallucinations were
tied to what it could see, and every POVID recipe tried lowered its recall with them: README, "POVID
training".) The val split's references are clean (they are CHAIR's ground truth). The four
others use the varied templates and name each clear object with probability 0.85 and each weak one with 0.5
(at least one object), in random order, by a CHAIR synonym (one per object and image) 25% of the time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from povid_eval.world import text
from povid_eval.world.catalog import CATEGORY_BY_NAME, RATES, SCENE_BY_NAME, Scene
from povid_eval.world.render import png_bytes, render
from povid_eval.world.sampling import Instance, sample_layout


@dataclass(frozen=True)
class WorldObject:
    """A category in one image: its instances' shared colour, count, position word, salience, total area."""

    category: str
    colour: str
    count: int
    position: str
    salience: str  # clear | weak | hidden
    area: int
    center: tuple[float, float]  # mean of the instance box centres
    box: tuple[int, int, int, int]  # union of the instance boxes (x, y, w, h)

    def mention(self, synonym: tuple[str, str] | None = None) -> text.Mention:
        return text.mention(self.category, self.count, self.colour, self.position, synonym)


@dataclass(frozen=True)
class WorldImage:
    image_id: int
    scene: str
    missing: tuple[str, ...]
    instances: tuple[Instance, ...]  # annotation order (a shuffle of the drawing order)
    visibility: tuple[str, ...]  # per instance, same order
    visible_fraction: tuple[float, ...]
    objects: tuple[WorldObject, ...]  # per category, in order of first annotation
    pixels: Image.Image = field(compare=False, repr=False)
    masks: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)  # per instance, np.packbits

    def visible_mask(self, category: str) -> np.ndarray:
        """Bool (height, width): the pixels that show ``category`` (its instances not hidden)."""
        size = self.pixels.height * self.pixels.width
        union = np.zeros(size, bool)
        for inst, label, packed in zip(self.instances, self.visibility, self.masks):
            if inst.category == category and label != "hidden":
                union |= np.unpackbits(packed, count=size).astype(bool)
        return union.reshape(self.pixels.height, self.pixels.width)

    @property
    def png(self) -> bytes:
        return png_bytes(self.pixels)

    @property
    def file_name(self) -> str:
        return f"{self.image_id:012d}.png"

    def object(self, category: str) -> WorldObject | None:
        return next((o for o in self.objects if o.category == category), None)


SYNONYM_RATE = 0.25


def image_rng(seed: int, stream: str, image_id: int) -> random.Random:
    """The random source of one image: a pure function of (seed, stream, image id)."""
    return random.Random(f"povid-world:{seed}:{stream}:{image_id}")


def visibility(inst: Instance, fraction: float) -> str:
    if inst.hidden or fraction < 0.3:
        return "hidden"
    if fraction < 0.8:
        return "occluded"
    if inst.faint:
        return "faint"
    return "small" if inst.small else "clear"


def _objects(instances, labels) -> tuple[WorldObject, ...]:
    out = []
    for name in dict.fromkeys(i.category for i in instances):
        group = [(i, v) for i, v in zip(instances, labels) if i.category == name]
        boxes = [i.bbox for i, _ in group]
        cx = sum(b[0] + b[2] / 2 for b in boxes) / len(boxes)
        cy = sum(b[1] + b[3] / 2 for b in boxes) / len(boxes)
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
        labels_ = [v for _, v in group]
        salience = "clear" if "clear" in labels_ else "hidden" if set(labels_) == {"hidden"} else "weak"
        out.append(
            WorldObject(
                name,
                group[0][0].colour,
                len(group),
                text.position_of(cx, cy),
                salience,
                sum(b[2] * b[3] for b in boxes),
                (cx, cy),
                (x0, y0, x1 - x0, y1 - y0),
            )
        )
    return tuple(out)


def make_image(
    seed: int,
    stream: str,
    image_id: int,
    scene: Scene | str | None = None,
    drop: tuple[str, ...] = (),
    include: tuple[str, ...] = (),
) -> WorldImage:
    """Sample, render and describe one image (see module docstring); ``drop`` / ``include`` force core
    categories out / extras in."""
    if isinstance(scene, str):
        scene = SCENE_BY_NAME[scene]
    rng = image_rng(seed, stream, image_id)
    layout = sample_layout(rng, scene, drop, include)
    img, fractions, masks = render(layout, rng)
    labels = [visibility(i, f) for i, f in zip(layout.instances, fractions)]
    order = list(range(len(layout.instances)))
    rng.shuffle(order)
    instances = tuple(layout.instances[k] for k in order)
    labels = tuple(labels[k] for k in order)
    return WorldImage(
        image_id=image_id,
        scene=layout.scene,
        missing=layout.missing,
        instances=instances,
        visibility=labels,
        visible_fraction=tuple(round(fractions[k], 3) for k in order),
        objects=_objects(instances, labels),
        pixels=img,
        masks=tuple(np.packbits(masks[k]) for k in order),
    )


def canonical_rank(category: str) -> int:
    """A category's place in canonical captions: the catalog's category order (COCO id). Each place in the list
    is one category, so the captioner decides at each whether that category is in the image."""
    return CATEGORY_BY_NAME[category].id


def canonical_order(objects) -> list[WorldObject]:
    """Objects in canonical caption order (canonical_rank)."""
    return sorted(objects, key=lambda o: canonical_rank(o.category))


def noise_partner(image: WorldImage, rng: random.Random) -> WorldObject | None:
    """An absent usual partner of the image's scene (a dropped core category first, else an absent extra) as
    an annotator might wrongly add it: one instance, a usual colour, a random place."""
    scene = SCENE_BY_NAME[image.scene]
    present = {o.category for o in image.objects}
    pool = list(image.missing) or [c for c in scene.extras if c not in present]
    if not pool:
        return None
    name = rng.choice(pool)
    names, weights = zip(*CATEGORY_BY_NAME[name].colours)
    colour = rng.choices(names, weights=weights)[0]
    centre = (rng.uniform(8, 56), rng.uniform(8, 56))
    return WorldObject(name, colour, 1, text.position_of(*centre), "noise", 0, centre, (0, 0, 0, 0))


def captions(image: WorldImage, seed: int, n: int = 5, noise: float = RATES["caption_noise"]) -> list[str]:
    """n reference captions of an image (see module docstring), from their own random stream; ``noise``: the
    chance that the canonical one names an absent usual partner (0 for the benchmark split: its references are
    ground truth)."""
    rng = image_rng(seed, "captions", image.image_id)
    seen = [o for o in image.objects if o.salience != "hidden"]
    scene = SCENE_BY_NAME[image.scene].phrase
    templates = rng.sample(text.CAPTION_TEMPLATES, n - 1)
    synonyms = {o.category: rng.choice(text.SYNONYMS[o.category]) for o in seen if o.category in text.SYNONYMS}
    if not seen:
        return [text.capitalize(f"an image of {text.scene_a(scene)}.")] * n
    canonical = canonical_order(seen)
    if rng.random() < noise and (extra := noise_partner(image, rng)):
        canonical.append(extra)
    out = [text.canonical_caption(scene, [o.mention() for o in canonical])]
    for template in templates:
        chosen = [o for o in seen if rng.random() < (0.85 if o.salience == "clear" else 0.5)]
        chosen = chosen or [max(seen, key=lambda o: o.area)]
        rng.shuffle(chosen)
        mentions = [o.mention(synonyms.get(o.category) if rng.random() < SYNONYM_RATE else None) for o in chosen]
        out.append(text.caption(scene, mentions, rng, template))
    return out
