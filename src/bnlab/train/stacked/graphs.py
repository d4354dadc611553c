"""CUDA graphs of a stack's fixed-shape training step, one per batch size.

Capture needs warm-up steps on a side stream; every tensor a step writes is snapshotted
before and restored after them and the capture (the ``mutable`` list, in a ``finally``), so
warm-up does not leak into the run. A failed capture warns once, restores the random
generators as well, and the stack trains eagerly from then on, exactly as if it had never
tried (graphs are an optimisation, never a requirement).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch


class StepGraphs:
    """``run(idx)``: ``step(idx)`` eagerly, or replayed from the graph of ``idx``'s batch size.

    ``step``: one training step of the stack on a ``(b, K)`` index tensor; ``mutable``: every
    tensor a step writes; ``enabled``: capture at all (``cuda_graphs``).
    """

    def __init__(
        self,
        step: Callable[[torch.Tensor], None],
        mutable: Callable[[], list[torch.Tensor]],
        k: int,
        device: torch.device,
        enabled: bool,
    ):
        self.step, self.mutable, self.k, self.device = step, mutable, k, device
        self._graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        self._failed = not enabled

    def run(self, idx: torch.Tensor) -> None:
        if self._failed:
            self.step(idx)
            return
        size = idx.shape[0]
        if size not in self._graphs:
            try:
                self._graphs[size] = self._capture(size)
            except Exception as error:  # graphs are an optimisation: fall back to eager
                warnings.warn(
                    f"cuda_graphs: capture failed ({type(error).__name__}: {error}); "
                    "training eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._failed = True
                self.step(idx)
                return
        graph, static = self._graphs[size]
        static.copy_(idx, non_blocking=True)
        graph.replay()

    def _capture(self, size: int):
        """A CUDA graph of one step of ``size`` samples per run.

        Every tensor a step writes is restored after the warm-up steps and the capture,
        whether the capture succeeds or not; on failure the random generators too, so a
        stack that falls back to eager computes exactly what it would have computed had it
        never tried.
        """
        static = torch.zeros((size, self.k), dtype=torch.long, device=self.device)
        saved = [t.clone() for t in self.mutable()]
        rng = _rng_state(self.device)
        captured = False
        try:
            with self._warm_up_stream():
                for _ in range(3):
                    self.step(static)
            graph = self._record(static)
            captured = True
        finally:
            for t, copy in zip(self.mutable(), saved, strict=True):
                t.copy_(copy)
            if not captured:
                _set_rng_state(self.device, rng)
        return graph, static

    @contextlib.contextmanager
    def _warm_up_stream(self) -> Iterator[None]:
        """A side stream for the warm-up steps capture requires, joined afterwards."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            torch.cuda.current_stream(self.device).wait_stream(stream)

    def _record(self, static: torch.Tensor):
        """One step recorded into a new CUDA graph."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(static)
        return graph


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of ``device``'s default generator (the one shared dropout masks use)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
