"""Prefix sharing in the preference step: y_w and y_l^t behind one copy of the image + prompt prefix give the
same log-probs, losses and LoRA gradients as one sequence per response (vlm/logprobs.pack_shared)."""

from pathlib import Path

import pytest
import torch

from povid_eval.train.loop import Scorer, TrainConfig, add_lora, batch_loss, kinds_for
from povid_eval.train.preferences import Preference
from povid_eval.vlm.logprobs import pack_shared

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


def test_pack_shared_layout():
    pack = pack_shared(["x", "y", "x"], [[1, 2, 3], [1, 2], [1, 2, 3]], [[7, 8], [9], [4, 5, 6]], pad_id=0)
    assert pack.groups == [[0, 2], [1]]
    assert pack.input_ids.tolist() == [[1, 2, 3, 7, 8, 4, 5, 6], [1, 2, 9, 0, 0, 0, 0, 0]]
    assert pack.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]  # both responses start after the prefix
    allowed = pack.allowed[0].int().tolist()
    assert allowed[5] == [1, 1, 1, 0, 0, 1, 0, 0]  # the second response sees the prefix and itself, not the first
    assert allowed[4] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert pack.allowed[1, 6].tolist() == [False] * 6 + [True, False]  # padding attends to itself only
    # the first token of each response is predicted by the prefix's last position
    assert pack.token_pred.tolist() == [2, 3, 2, 5, 6, 1] and pack.token_target.tolist() == [7, 8, 4, 5, 6, 9]
    assert pack.token_row.tolist() == [0, 0, 2, 2, 2, 1]
    with pytest.raises(ValueError, match="same prompt ids"):
        pack_shared(["x", "x"], [[1], [2]], [[3], [4]], pad_id=0)


@pytest.fixture(scope="module")
def setup(tiny_env):
    from povid_eval.vlm import load_vlm

    torch.set_num_threads(1)
    vlm = load_vlm(ROOT / "models" / "base")
    vlm.model = add_lora(vlm.model, r=4, alpha=8)
    generator = torch.Generator().manual_seed(0)
    for name, p in vlm.model.named_parameters():
        if "lora_B" in name:  # a LoRA that changes the outputs, so policy and reference differ
            p.data = torch.randn(p.shape, generator=generator) * 0.05
    images = sorted((tiny_env[0] / "world").rglob("*.png"))[:3]
    texts = (
        ("A kitchen with a sink.", "A kitchen with a sink and a dog.", "A street with a car."),
        ("A park with a dog and a bench and a person.", "A park with a cat.", "A view of a park."),
        ("An office.", "An office with a laptop, a mouse and a keyboard and a cup.", "A picture of a chair."),
    )
    prefs = [
        Preference(str(i), str(image), "Describe this image.", c, t, n, noise_step=500, noise_seed=i)
        for i, (image, (c, t, n)) in enumerate(zip(images, texts))
    ]
    return vlm, prefs


@pytest.mark.parametrize("loss", ["dpo", "povid"])
def test_loss_and_every_lora_gradient_equal_the_unshared_step(setup, loss):
    vlm, prefs = setup
    scorer = Scorer(vlm, TEMPLATE)
    results = {}
    for shared in (True, False):
        vlm.model.zero_grad()
        out = batch_loss(scorer, prefs, TrainConfig(loss=loss, prefix_sharing=shared, sft_weight=0.5))
        out["loss"].backward()
        grads = {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.requires_grad}
        results[shared] = (out, grads)
    (a, ga), (b, gb) = results[True], results[False]
    lengths = {len(r.response_ids) for r in a["rows"]}
    assert len(lengths) > 2  # unequal response lengths in one batch
    # summed log-probs of ~80 nats: fp32 sums in another order differ by a few ulps (1.5e-5 seen)
    torch.testing.assert_close(a["policy"], b["policy"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(a["reference"], b["reference"], rtol=1e-6, atol=1e-5)
    assert (a["policy"] - a["reference"]).abs().max() > 1e-3
    torch.testing.assert_close(a["loss"], b["loss"], rtol=0, atol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=0, atol=1e-5, msg=name)
    assert max(g.abs().max().item() for g in ga.values()) > 1e-4  # gradients that say something


def test_shared_rows_are_one_sequence_per_image(setup):
    vlm, prefs = setup
    scorer = Scorer(vlm, TEMPLATE)
    rows, _ = scorer.encode(prefs, kinds_for("povid"))
    pack = pack_shared(
        [(r.image, r.prompt_ids) for r in rows], [r.prompt_ids for r in rows], [r.response_ids for r in rows], 0
    )
    assert len(rows) == 9 and len(pack.groups) == 6  # 3 clean prefixes with y_w, y_l^t; 3 noisy with y_l^n


def test_gradient_checkpointing_and_bf16_steps(setup):
    """Activation checkpointing recomputes the same step (gradients to 1e-6); bf16 autocast stays close."""
    vlm, prefs = setup
    scorer = Scorer(vlm, TEMPLATE)
    base = vlm.model.get_base_model()

    def step(**options):
        vlm.model.zero_grad()
        vlm.model.train()
        out = batch_loss(scorer, prefs, TrainConfig(loss="povid", **options))
        out["loss"].backward()
        return out["loss"].item(), {n: p.grad.clone() for n, p in vlm.model.named_parameters() if p.requires_grad}

    plain_loss, plain = step()
    base.activation_checkpointing_enable({"use_reentrant": False})
    try:
        ckpt_loss, ckpt = step(gradient_checkpointing=True)
    finally:
        base.activation_checkpointing_disable()
        vlm.model.eval()
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-6)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=0, atol=1e-6, msg=name)
    bf16_loss, bf16 = step(bf16=True)
    vlm.model.eval()
    assert bf16_loss == pytest.approx(plain_loss, rel=0.05)
    assert all(torch.isfinite(g).all() for g in bf16.values())
