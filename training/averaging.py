"""An exponential moving average of the trained weights (Polyak averaging), used for dev evaluation and saving.

Each optimizer step moves a shadow copy of every trainable parameter a little towards the live one:
shadow += (1 - d) * (live - shadow), with d = min(decay, (1 + n) / (10 + n)) after n updates, so that the
first steps are not pinned to the pretrained weights. Frozen parameters never change, so they have no shadow.
The live weights keep training; `applied()` swaps the shadow in for evaluation and saving and back after.
Its state goes into accelerate's checkpoints, so `--resume` continues the same average.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) to average weights (0 = off), got {decay}")
        self.decay, self.updates = decay, 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self._live(model)]

    def _live(self, model: nn.Module) -> List[torch.Tensor]:
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"weight average: the model lacks {len(missing)} averaged parameter(s), "
                             f"e.g. {missing[0]!r}")
        return [params[n].detach() for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, self._live(model), 1.0 - d)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after (even on error)."""
        live = self._live(model)
        kept = [p.clone() for p in live]
        torch._foreach_copy_(live, self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_(live, kept)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "names": self.names, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names:
            raise ValueError("weight average: the checkpoint averaged other parameters than this model trains "
                             "(changed freeze settings?)")
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = [s.clone() for s in state["shadow"]]
