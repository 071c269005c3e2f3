"""Our sigmoid DPO (train/loop.py + train/dpo.py) against TRL's DPOTrainer on one batch: same tiny LLaVA, same
LoRA weights, same token ids; the loss and every LoRA gradient agree to float32 rounding.

TRL is a test dependency only (pyproject's ``test`` extra); without it this module is skipped.

How TRL 1.16 is made to score exactly what we score:
- vision data skips TRL's dataset preparation: its collator (DataCollatorForVisionPreference) runs the processor
  on the prompt with ``add_special_tokens=False`` and on each completion text alone, and appends nothing. So the
  prompt carries our ``<s>`` literally and each completion is ``" " + text + "</s>"`` (our ``response_token_ids``);
  the test checks that the collated ids, attention mask and completion mask equal our packed rows.
- reference = the adapter disabled: TRL does that for an adapter it creates from ``peft_config``; given a ready
  PeftModel it instead adds a frozen copy of the adapter ("ref") as the reference. So TRL gets a copy of the base
  plus our LoraConfig, and our (non-zero) adapter weights are then copied into its adapter.
- fp32 throughout (TRL's config defaults to bf16 autocast), no gradient checkpointing, no truncation.
"""

import copy

import numpy as np
import pytest
import torch
from conftest import SMALL_SIZES
from PIL import Image

trl = pytest.importorskip("trl")

from povid_eval.train.loop import Scorer, TrainConfig, add_lora, batch_loss  # noqa: E402
from povid_eval.train.preferences import Preference  # noqa: E402
from povid_eval.vlm import VLM, build_tiny_llava  # noqa: E402
from povid_eval.vlm.logprobs import pack_right  # noqa: E402
from povid_eval.vlm.tokenizer import vocab_from_texts  # noqa: E402

TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
RECORDS = [  # (image, prompt, chosen, rejected); two records share an image
    (0, "Describe this image.", "A red dog is on the left.", "A red dog and a blue cat are on the left."),
    (1, "Describe this image.", "Two cats are next to a bowl.", "Two cats are next to a car."),
    (0, "Is there a cat in the image?", "No", "Yes, a cat is on the right."),
]
SMALL = SMALL_SIZES
TOL = 1e-5  # absolute, on the loss and on every gradient element (gradients are O(1e-3 .. 1e-1) here)


def _setup(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    texts = [TEMPLATE.replace("{prompt}", r[1]) for r in RECORDS] + [t for r in RECORDS for t in r[2:]]
    base, processor = build_tiny_llava(vocab_from_texts(texts), seed=0, **SMALL)
    trl_base = copy.deepcopy(base)
    torch.manual_seed(0)
    ours = add_lora(base, r=4, alpha=8)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B: policy != reference, and lora_A gets a gradient too
        for name, p in ours.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    prefs = [
        Preference(id=str(k), image=str(paths[i]), prompt=q, chosen=c, rejected_text=r)
        for k, (i, q, c, r) in enumerate(RECORDS)
    ]
    return ours, trl_base, processor, prefs


def _our_step(vlm, prefs):
    result = batch_loss(Scorer(vlm, TEMPLATE), prefs, TrainConfig(loss="dpo", beta=0.1))
    result["loss"].backward()
    return result["rows"], (result["policy"] - result["reference"]).detach(), result


def test_sigmoid_dpo_loss_and_lora_gradients_equal_trl(tmp_path):
    from datasets import Dataset
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from trl import DPOConfig, DPOTrainer

    ours, trl_base, processor, prefs = _setup(tmp_path)
    vlm = VLM(model=ours, processor=processor)
    tok = vlm.tokenizer
    examples = [
        {
            "images": vlm.prepare_images([Image.open(p.image)]),  # padded to a square, as LLaVA trains
            "prompt": tok.bos_token + TEMPLATE.replace("{prompt}", p.prompt),
            "chosen": " " + p.chosen + tok.eos_token,
            "rejected": " " + p.rejected_text + tok.eos_token,
        }
        for p in prefs
    ]

    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.1,
        loss_type=["sigmoid"],
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        precompute_ref_log_probs=False,
        per_device_train_batch_size=len(prefs),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = DPOTrainer(
        model=trl_base,
        args=args,
        processing_class=processor,
        train_dataset=Dataset.from_list([dict(e) for e in examples]),
        peft_config=copy.deepcopy(ours.peft_config["default"]),
    )
    theirs = trainer.model
    set_peft_model_state_dict(theirs, get_peft_model_state_dict(ours))
    mine = dict(ours.named_parameters())
    trained = {n: p for n, p in theirs.named_parameters() if p.requires_grad}
    assert set(trained) == {n for n, p in mine.items() if p.requires_grad} and trained
    for n, p in trained.items():
        assert torch.equal(p, mine[n]), n

    # the ids TRL scores are the ids we score, in the same row order ([chosen..., rejected...])
    batch = trainer._prepare_inputs(trainer.data_collator([dict(e) for e in examples]))
    ours.train()
    rows, log_ratios, ours_result = _our_step(vlm, prefs)
    input_ids, attention_mask, response_mask = pack_right(
        [r.prompt_ids for r in rows], [r.response_ids for r in rows], tok.pad_token_id
    )
    assert torch.equal(batch["attention_mask"], attention_mask)
    real = attention_mask.bool()  # TRL pads with </s> here (its collator reads pad id 0 as "no pad token"): masked
    assert torch.equal(batch["input_ids"][real], input_ids[real])
    assert torch.equal(batch["completion_mask"].bool(), response_mask)

    theirs.train()
    loss = trainer.compute_loss(theirs, batch)
    loss.backward()
    stats = ours_result["parts"]["dpo"]
    assert log_ratios.abs().min() > 0.01  # the adapter moves every row off the reference
    assert abs(loss.item() - ours_result["loss"].item()) <= TOL
    metrics = trainer._metrics["train"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(stats.reward_chosen.item(), abs=TOL)
    assert metrics["rewards/rejected"][-1] == pytest.approx(stats.reward_rejected.item(), abs=TOL)
    for n, p in trained.items():
        assert p.grad is not None and mine[n].grad is not None, n
        assert mine[n].grad.abs().max() > 0, n
        torch.testing.assert_close(mine[n].grad, p.grad, rtol=0, atol=TOL, msg=n)
