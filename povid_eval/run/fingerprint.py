"""A model's fingerprint: what decides its answers, so that cached samples and metrics belong to one model.

    fingerprint(card) = {card, backend, path, adapter, format, model_base, vision_tower, dtype, template,
                         files: {role: sha256 of the folder's files}}                    (hf backend)
                      = {card, backend, base_url, api_model}                              (openai backend)
    fingerprint_hash(fp) = sha256 of its canonical json without the card's name, first 16 hex digits

Every regular file at the top of each folder (weights, config, tokenizer, processor, adapter) is hashed by
content, so retraining a model under an old name, or replacing its weights, changes the fingerprint. Digests
are remembered per (path, size, mtime, inode) in $POVID_EVAL_CACHE/digests.json, so a 14 GB checkpoint is
read once, not on every run. A hub id is hashed through its local cache snapshot, or by id when it is not
cached. The device and thread count are not part of it; neither is the API key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from povid_eval import cards
from povid_eval.core.io import atomic_write_json
from povid_eval.core.paths import cache_dir

CHUNK = 1 << 20


def _digest_cache() -> Path:
    return cache_dir() / "digests.json"


def _load_digests() -> dict:
    """The remembered digests; an unreadable cache is only a cache: start it again."""
    try:
        data = json.loads(_digest_cache().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path, remembered: dict) -> str:
    """sha256 of a file's content, taken from ``remembered`` when its size, mtime and inode are unchanged."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    if key not in remembered:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        remembered[key] = h.hexdigest()
    return remembered[key]


def folder_sha256(folder: Path, remembered: dict) -> str:
    """sha256 over (name, content digest) of every regular, non-hidden file at the top of ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.name}\0{file_sha256(p, remembered)}\n".encode())
    return h.hexdigest()


def _local_folder(card: cards.ModelCard, value: str) -> Path | None:
    path = card.resolve(value)
    if path.is_dir():
        return path
    from povid_eval.vlm.model import is_hub_id

    if is_hub_id(value):  # its local snapshot, if cached
        from povid_eval.vlm.convert import cached_snapshot

        return cached_snapshot(value)
    return None


def fingerprint(card: cards.ModelCard) -> dict:
    """What decides the model's answers (see the module docstring)."""
    if card.backend == "openai":
        return {
            "card": card.name,
            "backend": "openai",
            "base_url": card.base_url,
            "api_model": card.api_model,
        }
    info = {
        "card": card.name,
        "backend": card.backend,
        "path": card.path,
        "adapter": card.adapter,
        "format": card.format,
        "model_base": card.model_base,
        "vision_tower": card.vision_tower,
        "dtype": card.dtype,
        "image_aspect_ratio": card.image_aspect_ratio,
        "template": card.template,
        "files": {},
    }
    remembered = _load_digests()
    before = dict(remembered)
    for role in ("path", "model_base", "adapter", "vision_tower"):
        value = getattr(card, role)
        folder = _local_folder(card, value) if value else None
        if folder is not None:
            info["files"][role] = folder_sha256(folder, remembered)[:16]
    if remembered != before:
        try:
            atomic_write_json(_digest_cache(), remembered)
        except OSError:
            pass  # a cache that cannot be written costs only time
    return info


def fingerprint_hash(fp: dict) -> str:
    """16 hex digits of sha256 over the fingerprint without the card's name (renaming a card changes nothing)."""
    body = {k: v for k, v in fp.items() if k != "card"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
