"""Run-time shims for running LLaVA's own released code (llava-torch 1.2.2.post1) on a CPU-only machine with
transformers 4.37.2 and torch 2.13.0, without editing anything installed. Imported by build_checkpoints.py and
reference_side.py (both run with .venv-ref/bin/python).

* ``offline()``: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, set before transformers is imported: every path the
  parity scripts hand LLaVA is a local folder, and no model hub is reachable here anyway (an online lookup
  would only wait for timeouts).
* ``llava_builder_dtype(dtype)``: ``llava.model.builder.load_pretrained_model`` hard-codes
  ``torch_dtype=torch.float16`` for the language model (no argument changes it unless 4/8-bit) and casts the
  CLIP tower with ``vision_tower.to(device=device_map, dtype=torch.float16)`` whenever ``device_map != "auto"``.
  Inside this context the builder module's global ``torch`` is a thin proxy whose ``float16`` is ``dtype``
  (e.g. ``torch.float32``), so the same code path loads every weight in that dtype. Nothing else in the
  builder changes; the proxy is removed on exit.
* ``deepspeed_stub()``: ``llava.train.train.maybe_zero_3`` (used by ``get_peft_state_maybe_zero_3`` and
  ``get_peft_state_non_lora_maybe_zero_3``, the functions train.py saves a LoRA run with) imports deepspeed
  inside the function to check ZeRO-3 partitioning. Parameters built here never have ``ds_id``, so only the
  import has to succeed: this context puts a minimal stand-in module in ``sys.modules`` and takes it out again
  (outside it, transformers' ``is_deepspeed_available`` keeps seeing no deepspeed).
"""

from __future__ import annotations

import contextlib
import os
import sys
import types


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class _TorchWithDtype(types.ModuleType):
    """``torch``, except that ``float16`` answers another dtype (for llava.model.builder only)."""

    def __init__(self, torch_module, float16_is):
        super().__init__("torch")
        self.__dict__["_torch"] = torch_module
        self.__dict__["float16"] = float16_is

    def __getattr__(self, name):
        return getattr(self.__dict__["_torch"], name)


@contextlib.contextmanager
def llava_builder_dtype(dtype):
    import torch
    from llava.model import builder

    if dtype is None or dtype == torch.float16:
        yield
        return
    original = builder.torch
    builder.torch = _TorchWithDtype(torch, dtype)
    try:
        yield
    finally:
        builder.torch = original


@contextlib.contextmanager
def deepspeed_stub():
    names = [
        "deepspeed",
        "deepspeed.runtime",
        "deepspeed.runtime.zero",
        "deepspeed.runtime.zero.partition_parameters",
    ]
    if any(n in sys.modules for n in names):  # a real deepspeed is loaded: use it
        yield
        return

    class ZeroParamStatus:  # the enum maybe_zero_3 compares with, reached only for ZeRO-3 params (ds_id)
        AVAILABLE = 1
        NOT_AVAILABLE = 2
        INFLIGHT = 3

    class _GatheredParameters(contextlib.nullcontext):
        def __init__(self, *args, **kwargs):
            super().__init__()

    mods = {n: types.ModuleType(n) for n in names}
    mods["deepspeed"].zero = types.SimpleNamespace(GatheredParameters=_GatheredParameters)
    mods["deepspeed"].runtime = mods["deepspeed.runtime"]
    mods["deepspeed.runtime"].zero = mods["deepspeed.runtime.zero"]
    mods["deepspeed.runtime.zero"].partition_parameters = mods["deepspeed.runtime.zero.partition_parameters"]
    mods["deepspeed.runtime.zero.partition_parameters"].ZeroParamStatus = ZeroParamStatus
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (
        "llava-torch",
        "torch",
        "transformers",
        "tokenizers",
        "sentencepiece",
        "protobuf",
        "accelerate",
        "peft",
        "safetensors",
        "huggingface-hub",
        "numpy",
        "pillow",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
