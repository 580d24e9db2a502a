"""Count-preserving batch augmentation: flips, colour jitter and small shifts that cannot lose an item.

Runs on float batches in [0, 1] on whatever device trains, with independent random parameters per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augmentation:
    hflip: bool = True
    vflip: bool = True
    # Maximum relative change of brightness, contrast and saturation (0 disables).
    color_jitter: float = 0.2
    # Largest shift as a fraction of the side; the image wraps with reflection, nothing is cut away.
    max_shift: float = 0.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device="cpu").to(dev)

        if self.hflip:
            flip = rand(n) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if self.vflip:
            # Bins are photographed from above: upside down is as plausible as right way up.
            flip = rand(n) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(2), x)
        if self.color_jitter > 0:
            j = self.color_jitter

            def factor() -> torch.Tensor:
                return (1 + (rand(n) * 2 - 1) * j).view(n, 1, 1, 1)

            x = x * factor()
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * factor() + mean
            grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            x = (x - grey) * factor() + grey
            x = x.clamp_(0, 1)
        if self.max_shift > 0:
            side = x.shape[-1]
            pad = max(1, int(round(side * self.max_shift)))
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
            offsets = (rand(n, 2) * (2 * pad + 1)).long().clamp_(max=2 * pad)
            x = torch.stack(
                [padded[i, :, oy : oy + side, ox : ox + side] for i, (oy, ox) in enumerate(offsets.tolist())]
            )
        return x
