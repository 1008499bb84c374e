"""Learning-rate schedule shared by teacher fine-tuning and student distillation."""

from __future__ import annotations

import torch


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int,
                        warmup_share: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first `warmup_share` of the steps, then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_share))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup + 1))),
    )
