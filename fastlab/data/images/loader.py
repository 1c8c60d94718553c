"""TensorLoader: batches of images (or any inputs) held as one tensor, normalised on the device."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorLoader:
    """Batches from inputs ``x`` ``(N, C, ...)`` and targets ``(N, ...)`` held in memory.

    uint8 images ``(N, C, H, W)`` are moved to ``device`` as uint8 (four times less to copy than
    float) and only then scaled to [0, 1]; float inputs are taken as they are. Then, when the
    loader has per-channel ``mean`` and ``std`` ``(C,)``, ``x`` is normalised: it comes out
    float32, ``(B, C, ...)``. ``x`` and ``y`` themselves are never changed. Shuffling draws from
    its own ``generator`` so the order is reproducible from the training seed.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bs: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, shuffle: bool = False, drop_last: bool = False,
                 generator: torch.Generator | None = None):
        self.x, self.y, self.bs = x, y, bs
        self.shuffle, self.generator = shuffle, generator
        # Dropping a ragged last batch keeps batch-norm statistics sane; never drop everything.
        self.drop_last = drop_last and len(x) > bs
        # Statistics broadcast over a batch: (1, C, 1, 1) for images, (1, C) for features.
        self._stat_shape = (1, -1) + (1,) * (x.ndim - 2)
        self.mean = self.std = None
        self.device = x.device
        if mean is not None:
            self.set_stats(mean, std)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Normalise with per-channel ``mean`` and ``std`` ``(C,)`` from now on."""
        # On the batches' device: a batch is normalised after its copy there.
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(self._stat_shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(self._stat_shape)

    def to(self, device: torch.device, resident: bool = True) -> TensorLoader:
        """Batches on ``device``. ``resident``: the whole set lives there (no copy per batch).
        Otherwise it stays in host memory, pinned when the device is CUDA, and each uint8 batch
        is copied without blocking, so the copy overlaps the previous batch's compute."""
        self.device = device
        if resident or device.type == "cpu":
            self.x, self.y = self.x.to(device), self.y.to(device)
        else:
            self.x, self.y = self.x.cpu(), self.y.cpu()
            if device.type == "cuda":
                self.x, self.y = self.x.pin_memory(), self.y.pin_memory()
        if self.mean is not None:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    @property
    def resident(self) -> bool:
        return self.x.device == self.device or self.x.device.type == self.device.type == "cpu"

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    channels_last = False  # hand batches out in NHWC memory order (the GPU path sets it)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> scaled to [0, 1]; float ``(B, C, ...)`` as it is; then
        normalised when the loader has statistics. Always a new tensor, never ``xb`` changed."""
        if xb.dtype == torch.uint8:
            out = xb.float().div_(255.0)  # in place on the float copy: xb is untouched
        else:
            # Not in place: .float() of a float32 batch is the batch itself, and an unshuffled
            # loader's batches are views of the stored tensor.
            out = xb.float()
        if self.mean is not None and out is not xb:
            # In place on the batch's own float copy: one large allocation per batch, not three
            # (on the CPU, three per batch fragment the heap into hundreds of MB never returned).
            out = out.sub_(self.mean).div_(self.std)
        elif self.mean is not None:
            out = (out - self.mean) / self.std
        elif out is xb:
            out = out.clone()  # the caller may change it; the stored tensor must not change
        channels_last = self.channels_last and out.ndim == 4
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            idx = slice(b * self.bs, (b + 1) * self.bs)
            if order is not None:
                idx = order[idx]
            xb, yb = self.x[idx], self.y[idx]
            if not self.resident:  # a gathered batch is not pinned: pin it so the copy is asynchronous
                pinned = self.device.type == "cuda"
                xb = (xb.pin_memory() if pinned else xb).to(self.device, non_blocking=pinned)
                yb = (yb.pin_memory() if pinned else yb).to(self.device, non_blocking=pinned)
            yield self.normalize(xb), yb
