"""The reference side of the parity check: LLaVA's OWN released code (llava-torch 1.2.2.post1, transformers 4.37.2)
on the CPU in fp32, for every (checkpoint, image, question) of a spec.

    .venv-ref/bin/python parity/reference_side.py SPEC.json OUT_DIR

Nothing here re-implements LLaVA: the model, tokenizer and image processor come from
``llava.model.builder.load_pretrained_model``, pixels from ``llava.mm_utils.process_images`` (with the model
config's ``image_aspect_ratio``), the prompt from ``llava.conversation.conv_templates``, the ids from
``llava.mm_utils.tokenizer_image_token``, generation from ``LlavaLlamaForCausalLM.generate``; the per-item steps
are those of ``llava/eval/model_vqa_loader.py`` / ``model_vqa.py`` (batch size 1), with only their ``.cuda()`` /
``.half()`` left out.

Spec (JSON; relative paths are resolved against the spec file's folder)::

    {
      "checkpoints": [
        {"name": "base",   "model_path": "ckpt/llava-tiny-base",   "model_base": null},
        {"name": "lora",   "model_path": "ckpt/llava-tiny-lora",   "model_base": "ckpt/llava-tiny-base",
         "model_name": "llava-tiny-lora"},
        {"name": "merged", "model_path": "ckpt/llava-tiny-merged", "model_base": null}
      ],
      "images": ["img/rgb_300x200.png", "img/gray_50x80.png"],
      "questions": [
        {"text": "Describe this image.", "conv_mode": "vicuna_v1"},
        {"text": "Is there a dog in the image?\\nAnswer the question using a single word or phrase.",
         "conv_mode": "vicuna_v1"}
      ],
      "max_new_tokens": 16,
      "dtype": "fp32"
    }

* ``checkpoints[].name``: free label (defaults to the folder name). ``model_base``: null, or the base a LoRA
  folder goes on. ``model_name``: what LLaVA's builder branches on (it must contain "llava"; "lora" with a
  model_base means LoRA merge-on-load); defaults to ``get_model_name_from_path(model_path)`` as LLaVA's eval
  scripts compute it.
* ``questions[].text``: the question as in a LLaVA question file (bench suffix included); the script puts
  ``DEFAULT_IMAGE_TOKEN + "\\n"`` in front (or ``<im_start><image><im_end>\\n`` when the config says
  ``mm_use_im_start_end``), then ``conv_templates[conv_mode]`` builds the prompt (any key of
  ``llava.conversation.conv_templates``: vicuna_v1, llava_v1, v1, plain, llava_llama_2, ...). As in
  model_vqa_loader.py, a model whose name contains "plain" (and not "finetune") gets "_mmtag" appended to a
  conv_mode without "mmtag"; ``conv_mode_used`` in the output records what was used.
* ``max_new_tokens``: for ``generate`` (do_sample=False, temperature=0, top_p=None, num_beams=1, use_cache=True,
  as LLaVA's eval scripts call it with --temperature 0).
* ``dtype`` (optional, default "fp32"): "fp32" loads every weight in fp32 (a run-time patch of the builder's
  hard-coded fp16, see llava_runtime.py); "fp16" keeps the builder's own fp16 (CPU fp16 matmuls: slow, and not
  what the parity compares).

Output, in OUT_DIR (created):

* ``reference.json``: ``{"versions", "spec", "checkpoints": [{"name", "model_path", "model_base", "model_name",
  "context_len", "config": {image_aspect_ratio, mm_use_im_start_end, ...}}], "images": [{"path", "size"}],
  "questions": [...], "items": [...]}``; one item per (c, i, q) in that nested order with ``checkpoint``,
  ``image``, ``question`` (indices), ``conv_mode_used``, ``prompt`` (the exact string), ``input_ids``
  (IMAGE_TOKEN_INDEX = -200 where the image goes), ``embeds_length`` (the sequence length after LLaVA splices
  in the image features), ``pixel_values`` / ``logits`` (file names below),
  ``generate_output_ids`` (``model.generate(...)`` 's sequence as returned: with transformers 4.37.2 and
  inputs_embeds it STARTS WITH A PLACEHOLDER BOS (id 1) that is not a generated token), ``greedy_ids`` (the
  generated tokens only: the last len(scores) ids; eos included when it stopped there), ``output_text``
  (``batch_decode(generate_output_ids, skip_special_tokens=True)[0].strip()``, as the eval scripts write it),
  ``logits_argmax`` (== greedy_ids[0]), ``logits_top5``, ``step_margins``.
* ``pixel_values_c{c}_i{i}.npy``: float32 [1, 3, 336, 336], what the model gets (process_images(...)[0] then
  unsqueeze(0)).
* ``logits_c{c}_i{i}_q{q}.npy``: float32 [vocab], the last position's logits of one forward pass
  ``model(input_ids, images=pixel_values, image_sizes=[image.size])``.
* ``step_margins`` (in each item): per generated token, the gap between the best and the second-best raw
  next-token logit of generate's scores, for telling a near-tie from a real divergence.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llava_runtime  # noqa: E402

llava_runtime.offline()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from llava.constants import (  # noqa: E402
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
)
from llava.conversation import conv_templates  # noqa: E402
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.utils import disable_torch_init  # noqa: E402
from PIL import Image  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CONFIG_KEYS = (
    "image_aspect_ratio",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "mm_vision_tower",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_projector_type",
    "mm_patch_merge_type",
    "vocab_size",
)


def _path(value, root: Path) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def load_spec(file: Path) -> dict:
    spec = json.loads(file.read_text())
    root = file.resolve().parent
    for key in ("checkpoints", "images", "questions", "max_new_tokens"):
        if key not in spec:
            raise SystemExit(f"{file}: missing {key!r}")
    if spec.get("dtype", "fp32") not in DTYPES:
        raise SystemExit(f"{file}: dtype must be one of {sorted(DTYPES)}")
    for ck in spec["checkpoints"]:
        ck["model_path"] = _path(ck["model_path"], root)
        ck["model_base"] = _path(ck.get("model_base"), root)
        ck.setdefault("model_name", get_model_name_from_path(ck["model_path"]))
        ck.setdefault("name", Path(ck["model_path"]).name)
        if "llava" not in ck["model_name"].lower():
            raise SystemExit(f"{file}: model_name {ck['model_name']!r} must contain 'llava' (LLaVA's builder branch)")
    spec["images"] = [_path(p, root) for p in spec["images"]]
    for q in spec["questions"]:
        if q.get("conv_mode") not in conv_templates:
            raise SystemExit(f"{file}: conv_mode {q.get('conv_mode')!r} is not in llava.conversation.conv_templates")
    return spec


def build_prompt(question: str, conv_mode: str, model_config) -> str:
    """model_vqa_loader.py's CustomDataset.__getitem__ / model_vqa.py, prompt part."""
    qs = question
    if getattr(model_config, "mm_use_im_start_end", False):
        qs = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + qs
    else:
        qs = DEFAULT_IMAGE_TOKEN + "\n" + qs
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], qs)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def conv_mode_for(model_name: str, conv_mode: str) -> str:
    """model_vqa_loader.py's auto-switch for plain (pretraining-stage) models."""
    if "plain" in model_name and "finetune" not in model_name.lower() and "mmtag" not in conv_mode:
        return conv_mode + "_mmtag"
    return conv_mode


def run(spec: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[spec.get("dtype", "fp32")]
    torch.set_grad_enabled(False)
    disable_torch_init()  # as the eval scripts (no-op reset_parameters; every weight is loaded anyway)
    images = []
    for path in spec["images"]:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))  # model_vqa*.py: Image.open(...).convert('RGB')
    result = {
        "versions": llava_runtime.versions(),
        "spec": spec,
        "checkpoints": [],
        "images": [{"path": p, "size": list(im.size)} for p, im in zip(spec["images"], images)],
        "questions": spec["questions"],
        "items": [],
    }
    for ci, ck in enumerate(spec["checkpoints"]):
        t0 = time.time()
        with llava_runtime.llava_builder_dtype(dtype):
            tokenizer, model, image_processor, context_len = load_pretrained_model(
                ck["model_path"], ck["model_base"], ck["model_name"], device_map="cpu", device="cpu"
            )
        model.eval()
        dtypes = sorted({str(p.dtype) for p in model.parameters()})
        result["checkpoints"].append(
            {
                **{k: ck[k] for k in ("name", "model_path", "model_base", "model_name")},
                "context_len": context_len,
                "param_dtypes": dtypes,
                "tokenizer_class": type(tokenizer).__name__,
                "tokenizer_len": len(tokenizer),
                "config": {k: getattr(model.config, k, None) for k in CONFIG_KEYS},
                "load_seconds": round(time.time() - t0, 3),
            }
        )
        print(f"[{ck['name']}] loaded {ck['model_path']} (model_name {ck['model_name']}, params {dtypes})", flush=True)
        for ii, image in enumerate(images):
            image_tensor = process_images([image], image_processor, model.config)[0]
            pixel_values = image_tensor.unsqueeze(0).to(dtype=dtype)  # model_vqa.py: .unsqueeze(0).half().cuda()
            pv_name = f"pixel_values_c{ci}_i{ii}.npy"
            np.save(out / pv_name, pixel_values.float().numpy())
            for qi, q in enumerate(spec["questions"]):
                conv_mode = conv_mode_for(ck["model_name"], q["conv_mode"])
                prompt = build_prompt(q["text"], conv_mode, model.config)
                ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
                input_ids = ids.unsqueeze(0)  # model_vqa.py: .unsqueeze(0).cuda()
                with torch.inference_mode():
                    fwd = model(input_ids, images=pixel_values, image_sizes=[image.size], use_cache=False)
                    gen = model.generate(
                        input_ids,
                        images=pixel_values,
                        image_sizes=[image.size],
                        do_sample=False,
                        temperature=0,
                        top_p=None,
                        num_beams=1,
                        max_new_tokens=spec["max_new_tokens"],
                        use_cache=True,
                        return_dict_in_generate=True,  # adds .scores; the decoding is the same
                        output_scores=True,
                    )
                logits = fwd.logits[0, -1].float()
                output_ids = gen.sequences  # what the eval scripts decode
                text = tokenizer.batch_decode(output_ids, skip_special_tokens=True)[0].strip()
                n_new = len(gen.scores)
                top2 = [torch.topk(s[0].float(), 2).values for s in gen.scores]
                tag = f"c{ci}_i{ii}_q{qi}"
                np.save(out / f"logits_{tag}.npy", logits.numpy())
                top5 = torch.topk(logits, 5)
                result["items"].append(
                    {
                        "checkpoint": ci,
                        "image": ii,
                        "question": qi,
                        "conv_mode_used": conv_mode,
                        "prompt": prompt,
                        "input_ids": input_ids[0].tolist(),
                        "embeds_length": int(fwd.logits.shape[1]),
                        "pixel_values": pv_name,
                        "logits": f"logits_{tag}.npy",
                        "step_margins": [float(t[0] - t[1]) for t in top2],
                        "logits_argmax": int(logits.argmax()),
                        "logits_top5": [[int(i), float(v)] for v, i in zip(top5.values, top5.indices)],
                        "generate_output_ids": output_ids[0].tolist(),
                        "greedy_ids": output_ids[0, output_ids.shape[1] - n_new :].tolist(),
                        "output_text": text,
                    }
                )
                print(f"  image {ii} question {qi}: {text!r}", flush=True)
        del model
    (out / "reference.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    spec = load_spec(Path(argv[0]))
    run(spec, Path(argv[1]).expanduser().resolve())
    print(f"wrote {Path(argv[1]) / 'reference.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
