"""fast.ai's MixUp and CutMix: training batches mixed with a shuffled copy of themselves.

Both change the batch in ``before_batch`` (training only: validation sees the data as it is) and,
while training, stand in for the Learner's loss with the mixed loss

    loss = lam * loss_func(pred, y) + (1 - lam) * loss_func(pred, y[perm])

computed per item (``loss_func(pred, y, reduction="none") -> (B,)``) and averaged, so that the
labels are mixed in the loss as fast.ai does (``lam`` is per image for MixUp, per batch for
CutMix). CutMix of segmentation pastes the mask box as well: each pixel keeps its own true
class, so the loss is the task's own.

Every draw comes from the callback's own ``torch.Generator`` (seeded from the run's seed), whose
state ``last.pt`` keeps: the same seed gives the same run, and a resumed run the same draws as
an unbroken one. The global torch generator is left as it was (dropout and augmentation draw the
same with mixing on or off).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastlab.callbacks.core import Callback
from fastlab.errors import DataError

# The mixing stream is the run's seed plus this, apart from the loader's shuffling generator
# (seeded with the seed itself): the same seed would correlate the two permutations.
SEED_OFFSET = 0x6D6978  # "mix"


def sample_beta(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` float32 draws of Beta(alpha, alpha) taken from ``generator`` alone.

    torch's Beta (through its Gamma) takes no generator, so it draws from the global CPU generator
    set to ``generator``'s state, and the global state is put back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((n,))
        generator.set_state(torch.get_rng_state())
    return lam


def mixed_loss(loss_func: Callable[..., torch.Tensor], pred: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor,
               lam: torch.Tensor) -> torch.Tensor:
    """Scalar ``mean(lam * loss(pred, y) + (1 - lam) * loss(pred, y_other))`` over items.

    ``pred (B, c)``, ``y`` and ``y_other (B,)`` class indices, ``lam (B,)`` or a scalar tensor;
    ``loss_func`` must take ``reduction="none"`` (as ``F.cross_entropy`` does)."""
    a = loss_func(pred, y, reduction="none")  # (B,)
    b = loss_func(pred, y_other, reduction="none")
    return torch.lerp(b, a, lam.to(a.dtype)).mean()


def random_box(h: int, w: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """fast.ai's CutMix box ``(y1, y2, x1, x2)``: sides ``sqrt(1 - lam)`` of the image's, centred
    on a uniform pixel and clipped to the image (so its area can be less than ``1 - lam``)."""
    cut = (1.0 - lam) ** 0.5
    cut_h, cut_w = round(h * cut), round(w * cut)
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    return y1, y2, x1, x2


class MixCallback(Callback):
    """What MixUp and CutMix share: the generator, its saved state, and the mixed loss that stands
    in for ``learn.loss_func`` while training (the task's own loss is back for validation)."""

    def __init__(self, alpha: float, seed: int = 0):
        self.alpha = float(alpha)
        self.generator = torch.Generator().manual_seed(int(seed) + SEED_OFFSET)
        self.plain_loss: Callable[..., torch.Tensor] | None = None
        self._clear()

    def _clear(self) -> None:
        # What the current batch mixed with: y[perm] and lam, or None (nothing to mix in the loss).
        self.y_other: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def before_train(self) -> None:
        self.plain_loss, self.learn.loss_func = self.learn.loss_func, self.loss

    def after_train(self) -> None:
        self._restore()

    def after_fit(self) -> None:
        self._restore()  # a fit cancelled mid-epoch skips after_train

    def _restore(self) -> None:
        if self.plain_loss is not None:
            self.learn.loss_func, self.plain_loss = self.plain_loss, None
        self._clear()

    def after_batch(self) -> None:
        self._clear()

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.y_other is None:
            return self.plain_loss(pred, y)
        return mixed_loss(self.plain_loss, pred, y, self.y_other, self.lam)

    def _permutation(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator).to(device)


class MixUp(MixCallback):
    """fast.ai's MixUp: ``x = lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)`` per
    image, taken as ``max(lam, 1 - lam)`` so that each mix stays nearer its own label."""

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training:
            return
        x, y = learn.xb, learn.yb  # (B, C, H, W) floats, (B,) class indices
        lam = sample_beta(self.alpha, len(y), self.generator)
        lam = torch.maximum(lam, 1 - lam).to(x.device)  # (B,)
        perm = self._permutation(len(y), x.device)
        learn.xb = torch.lerp(x[perm], x, lam.view(-1, *[1] * (x.ndim - 1)).to(x.dtype))
        self.y_other, self.lam = y[perm], lam


class CutMix(MixCallback):
    """fast.ai's CutMix: one ``lam ~ Beta(alpha, alpha)`` per batch, a box of area ``1 - lam``
    pasted from ``x[perm]``, and ``lam`` corrected to the box's true area. With ``masks`` (the
    segment task) the targets' box is pasted too and the loss is the task's own."""

    def __init__(self, alpha: float, seed: int = 0, masks: bool = False):
        super().__init__(alpha, seed)
        self.masks = masks

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training:
            return
        x, y = learn.xb, learn.yb  # (B, C, H, W); (B,) class indices or (B, H, W) masks
        h, w = x.shape[-2:]
        lam = float(sample_beta(self.alpha, 1, self.generator))
        perm = self._permutation(len(x), x.device)
        y1, y2, x1, x2 = random_box(h, w, lam, self.generator)
        # Copies: the batch may share memory with the loader's stored tensors.
        x = x.clone()
        x[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
        learn.xb = x
        if self.masks:
            if y.shape[-2:] != x.shape[-2:]:
                raise DataError(f"cutmix pastes the same box into images and masks, but the masks are "
                                f"{tuple(y.shape[-2:])} and the images {(h, w)}: set trainer.callbacks.cutmix.alpha=0")
            y = y.clone()
            y[..., y1:y2, x1:x2] = y[perm][..., y1:y2, x1:x2]
            learn.yb = y
            return
        area = (y2 - y1) * (x2 - x1) / (h * w)
        self.y_other, self.lam = y[perm], torch.tensor(1.0 - area, device=x.device)
