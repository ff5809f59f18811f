"""Keeping up with a live source: which arrived frames to infer when inference falls behind.

``--max-lag N``: at most N arrived frames wait for inference. When more are waiting, the newest is
always kept and the others are thinned by the ``--stride`` rule (positions ``p`` with
``p % k == 0``, with the smallest ``k`` that keeps at most N; with N = 1 and a multiple of every
stride waiting, the newest alone); the frames left out are *skipped*:
recorded as such and given probabilities from their inferred neighbours, exactly like the frames
between two strided positions (:class:`FillBuffer`, which uses the pipeline's ``fill_probs``).
When inference keeps up, nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vce.runtime.errors import VCEError
from vce.runtime.labels import NUM_LABELS
from vce.runtime.pipeline import Fill, fill_probs


@dataclass(frozen=True)
class LagPolicy:
    """Chooses which waiting frames to infer (see the module docstring)."""

    max_lag: int

    def __post_init__(self) -> None:
        if isinstance(self.max_lag, bool) or not isinstance(self.max_lag, int) or self.max_lag < 1:
            raise VCEError(f"--max-lag must be a whole number of frames, at least 1; got {self.max_lag!r}")

    def stride_for(self, waiting: Sequence[int]) -> int:
        """The stride ``k`` applied to ``waiting`` (1 when nothing has to be skipped)."""
        return self._plan(np.asarray(waiting, dtype=np.int64))[0]

    def choose(self, waiting: Sequence[int]) -> tuple[list[int], list[int]]:
        """Split the waiting positions (increasing) into (to infer, skipped)."""
        pos = np.asarray(waiting, dtype=np.int64)
        if pos.size and np.any(np.diff(pos) <= 0):
            raise VCEError("waiting frame positions must be strictly increasing")
        keep = self._plan(pos)[1]
        return pos[keep].tolist(), pos[~keep].tolist()

    def _plan(self, pos: np.ndarray) -> tuple[int, np.ndarray]:
        """(k, which positions to infer). Strides above the span hold at most one multiple, so
        the search ends by then; if even that is too many (``max_lag`` 1), only the newest stays."""
        if pos.size <= self.max_lag:
            return 1, np.ones(pos.size, dtype=bool)
        span = int(pos[-1] - pos[0]) + 1
        for k in range(2, span + 1):
            keep = _kept(pos, k)
            if keep.sum() <= self.max_lag:
                return k, keep
        keep = np.zeros(pos.size, dtype=bool)
        keep[-1] = True
        return span + 1, keep


def _kept(pos: np.ndarray, k: int) -> np.ndarray:
    keep = pos % k == 0
    keep[-1] = True  # the newest is always inferred
    return keep


class FillBuffer:
    """Turns (frame, probabilities or None for skipped) in arrival order into rows ready to post-process.

    A skipped frame waits for the next inferred one, then gets ``fill_probs``'s value (``linear``:
    interpolated between its inferred neighbours; ``hold``: the last inferred); frames after the
    last inferred one are held flat at ``finish``, as the offline pipeline fills stride gaps.
    """

    def __init__(self, fill: Fill = "linear") -> None:
        self.fill = fill
        self._prev: np.ndarray | None = None  # the last inferred row
        self._frames: list[int] = []  # skipped frames waiting for the next inferred one

    @property
    def waiting(self) -> int:
        return len(self._frames)

    def add(self, frame: int, probs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Returns (frames [k], probs [k, 17]) that are now known (possibly none)."""
        if probs is None:
            self._frames.append(int(frame))
            return np.zeros(0, np.int64), np.zeros((0, NUM_LABELS), np.float32)
        row = np.asarray(probs, dtype=np.float32).reshape(1, NUM_LABELS)
        frames = [*self._frames, int(frame)]
        block = np.zeros((len(frames) + 1, NUM_LABELS), np.float32)
        inferred = np.zeros(len(frames) + 1, dtype=bool)
        if self._prev is not None:
            block[0], inferred[0] = self._prev, True
        block[-1], inferred[-1] = row, True
        filled = fill_probs(block, inferred, self.fill)[1:]
        self._prev, self._frames = row[0], []
        return np.asarray(frames, np.int64), filled

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The skipped frames after the last inferred one, held at its value."""
        frames, self._frames = self._frames, []
        if not frames:
            return np.zeros(0, np.int64), np.zeros((0, NUM_LABELS), np.float32)
        if self._prev is None:
            raise VCEError("no frame was inferred; nothing to fill the skipped frames from")
        return np.asarray(frames, np.int64), np.repeat(self._prev[None], len(frames), axis=0)
