"""The povid-eval side of the parity check: the same (checkpoint, image, question) items as reference_side.py,
through povid-eval's own path (run with the project's .venv: transformers 5).

    .venv/bin/python parity/ours.py PLAN.json OUT_DIR

Every checkpoint is loaded through a model card (cards.load_model_card + vlm.load_vlm_card: the path a
``povid-eval run`` takes, the tokenization check included); every image is read with core.io.read_image and
prepared by the card's image policy (VLM.prepare_images); every prompt is the bench card's question (its
``prompt``, or BenchCard.ask of the data file's question) in the bench's template (or the model card's),
rendered by VLM.prompt; the ids and pixels are those VLM.encode hands the model; generation is
VLM.generate_ids, greedy, batch size 1.

PLAN (JSON, written by check.py)::

    {"formats": [{"name", "card": "<models folder>/<name>.toml"}],
     "images": [paths], "prompts": [{"bench": card name, "raw": question as the bench's data file has it}],
     "max_new_tokens": N}

Output in OUT_DIR: ``ours.json`` with one item per (format, image, prompt) in that nested order: ``prompt``,
``input_ids`` (runs of the image token collapsed to LLaVA's IMAGE_TOKEN_INDEX -200), ``greedy_ids``,
``output_text``, ``pixel_values`` / ``logits`` (.npy files: float32 [1, 3, H, W] and the last position's
logits over the checkpoint's own vocabulary rows).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core.io import read_image
from povid_eval.vlm import load_vlm_card

LLAVA_IMAGE_INDEX = -200  # llava.constants.IMAGE_TOKEN_INDEX


def llava_ids(ids: list[int], image_token_id: int) -> list[int]:
    """Prompt ids in LLaVA's form: each run of image tokens is one IMAGE_TOKEN_INDEX."""
    out: list[int] = []
    for t in ids:
        if t == image_token_id:
            if not out or out[-1] != LLAVA_IMAGE_INDEX:
                out.append(LLAVA_IMAGE_INDEX)
        else:
            out.append(t)
    return out


def run(plan: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    images = [read_image(p) for p in plan["images"]]
    benches = {p["bench"]: registry.load_card(p["bench"]) for p in plan["prompts"]}
    result = {"plan": plan, "formats": [], "items": []}
    for fi, fmt in enumerate(plan["formats"]):
        t0 = time.time()
        card_path = Path(fmt["card"])
        card = cards.load_model_card(card_path.stem, card_path.parent)
        vlm = load_vlm_card(card)
        result["formats"].append(
            {"name": fmt["name"], "chunked": vlm.chunked, "load_seconds": round(time.time() - t0, 3)}
        )
        print(f"[{fmt['name']}] loaded {card.path} ({card.format})", flush=True)
        for ii, image in enumerate(images):
            pv_name = f"pixel_values_f{fi}_i{ii}.npy"
            for pi, p in enumerate(plan["prompts"]):
                bench = benches[p["bench"]]
                question = bench.prompt or bench.ask(p["raw"])  # CHAIR asks its card's prompt
                prompt = vlm.prompt(bench.template or card.template, question)
                batch = vlm.encode([image], [prompt])
                if pi == 0:
                    np.save(out / pv_name, batch["pixel_values"].float().cpu().numpy())
                logits = vlm.model(**batch).logits[0, -1].float().cpu()
                greedy = vlm.generate_ids([image], [prompt], max_new_tokens=plan["max_new_tokens"])[0]
                tag = f"f{fi}_i{ii}_p{pi}"
                np.save(out / f"logits_{tag}.npy", logits.numpy())
                result["items"].append(
                    {
                        "format": fi,
                        "image": ii,
                        "prompt_index": pi,
                        "template": bench.template or card.template,
                        "prompt": prompt,
                        "input_ids": llava_ids(batch["input_ids"][0].tolist(), vlm.image_token_id),
                        "pixel_values": pv_name,
                        "logits": f"logits_{tag}.npy",
                        "greedy_ids": greedy,
                        "output_text": vlm.decode(greedy),
                    }
                )
        del vlm
    (out / "ours.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    run(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
