"""From a source to batches: filtering, normalisation, augmentation, shuffling and collation."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from sketchlab.data.augment import Augment
from sketchlab.data.sources import SPLITS, SketchSplits
from sketchlab.data.strokes import clean, scale_factor
from sketchlab.validation import ConfigValueError, check_bool, check_int

Collate = Callable[[list[np.ndarray]], dict[str, torch.Tensor]]


class SketchDataModule:
    """Prepares the splits of one source as Sketch-RNN's DataLoader does, and serves batches.

    Sketches longer than ``max_seq_len`` (or shorter than ``min_seq_len``) are dropped; ``max_seq_len="auto"``
    takes the longest sketch over the three splits, as magenta's ``get_max_len`` (it sets Sketch-RNN's loss
    scale and its default sample length). Offsets are
    clipped to ``[-1000, 1000]`` and, with ``normalize``, divided by the train set's offset std.
    ``limit`` caps each split (quick runs and tests). Training batches are drawn from a seeded
    shuffle, epoch after epoch; :meth:`state_dict` lets a resumed run continue the same stream.

    ``prefetch`` (default 2) prepares that many training batches ahead in a background thread (see
    :class:`PrefetchStream`), so augmentation and collation overlap the training step; the batches and
    :meth:`state_dict` are exactly those of the synchronous stream (``prefetch=0``).
    """

    def __init__(self, source: Any, name: str = "", batch_size: int = 100, max_seq_len: int | str = 250,
                 min_seq_len: int = 2,
                 normalize: bool = True, limit: int | None = None, eval_batch_size: int | None = None,
                 augment: Augment | None = None, collate: Collate | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, prefetch: int = 2) -> None:
        # the keys users write (conf/data/*.yaml is the `data` node), so errors name what to fix
        self.source = source
        self.name = name
        self.batch_size = check_int(batch_size, "data.batch_size", min=1)
        self.eval_batch_size = (check_int(eval_batch_size, "data.eval_batch_size", min=1, optional=True)
                                or self.batch_size)
        self.auto_max_seq_len = str(max_seq_len) == "auto"
        self.max_seq_len = (10**9 if self.auto_max_seq_len  # set from the data in setup()
                            else check_int(max_seq_len, "data.max_seq_len", min=1))
        self.min_seq_len = check_int(min_seq_len, "data.min_seq_len", min=0)
        if self.min_seq_len > self.max_seq_len:
            raise ConfigValueError(f"data.min_seq_len ({self.min_seq_len}) must not exceed data.max_seq_len "
                                   f"({self.max_seq_len}): no sketch could pass")
        self.normalize = check_bool(normalize, "data.normalize")
        self.limit = check_int(limit, "data.limit", min=1, optional=True)
        self.prefetch = check_int(prefetch, "data.prefetch", min=0)
        seed = check_int(seed, "seed")
        self.augment = augment
        self.collate = collate
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed + rank)
        self._order_rng = np.random.default_rng(seed)  # same on every rank, so shards don't overlap
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)
        self._pos = 0
        # the stream position of the last batch a PrefetchStream handed out (None: the live state is it)
        self._consumed: tuple | None = None
        self._stream: PrefetchStream | None = None
        self.splits: SketchSplits | None = None
        self.scale: float = 1.0

    def setup(self) -> SketchDataModule:
        """Load and prepare the splits (idempotent)."""
        if self.splits is not None:
            return self
        raw = self.source.load()
        if self.auto_max_seq_len:
            self.max_seq_len = max(len(s) for split in SPLITS for s in raw.sketches[split])
        sketches, labels = {}, {}
        for split in SPLITS:
            keep = [i for i, s in enumerate(raw.sketches[split]) if self.min_seq_len <= len(s) <= self.max_seq_len]
            if self.limit is not None:
                keep = keep[: self.limit]
            sketches[split] = [clean(raw.sketches[split][i]) for i in keep]
            if split in raw.labels:
                labels[split] = raw.labels[split][keep]
        for split in SPLITS:
            if not sketches[split]:
                raise ValueError(
                    f"the {split} split of {getattr(self.source, 'path', self.source)} is empty after filtering: "
                    f"{len(raw.sketches[split])} sketches, none with data.min_seq_len={self.min_seq_len} <= length "
                    f"<= data.max_seq_len={self.max_seq_len}" + (f" (data.limit={self.limit})" if self.limit else ""))
        if self.normalize:
            self.scale = scale_factor(sketches["train"])
            for split in SPLITS:
                for s in sketches[split]:
                    s[:, 0:2] /= self.scale
        self.splits = SketchSplits(sketches, labels, raw.class_names)
        return self

    def _require(self) -> SketchSplits:
        if self.splits is None:
            self.setup()
        assert self.splits is not None
        return self.splits

    def _collate(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if self.collate is None:
            raise ValueError("SketchDataModule has no collate function: the model config must name one")
        return self.collate(items)

    def train_batches(self, prefetch: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """An endless stream of augmented training batches (this rank's shard of each shuffled epoch).

        With ``prefetch`` > 0 (default: the module's ``prefetch``) a :class:`PrefetchStream` prepares
        them ahead in a thread; a stream opened earlier is closed first (one producer at a time).
        """
        prefetch = self.prefetch if prefetch is None else check_int(prefetch, "data.prefetch", min=0)
        self._require()
        if self._stream is not None:
            self._stream.close()
        if prefetch == 0:
            return self._batches()
        self._stream = PrefetchStream(self, prefetch)
        return self._stream

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The synchronous stream: each batch advances the live shuffle position and augmentation rng."""
        train = self._require()["train"]
        per_step = self.batch_size * self.world_size
        if len(train) < per_step:
            raise ValueError(f"train split has {len(train)} sketches, fewer than one global batch ({per_step})")
        while True:
            if self._pos + per_step > len(self._order):
                self._order = self._order_rng.permutation(len(train))
                self._pos = 0
            chunk = self._order[self._pos: self._pos + per_step][self.rank::self.world_size]
            self._pos += per_step
            items = [train[i] for i in chunk]
            if self.augment is not None:
                items = [self.augment(s, self.rng) for s in items]
            yield self._collate(items)

    def _position(self) -> tuple:
        """The live stream position; ``_order`` is replaced, never written in place, so a reference will do."""
        return (self.rng.bit_generator.state, self._order_rng.bit_generator.state, self._order, self._pos)

    def _set_position(self, position: tuple) -> None:
        rng, order_rng, self._order, self._pos = position
        self.rng.bit_generator.state = rng
        self._order_rng.bit_generator.state = order_rng

    def eval_batches(self, split: str = "valid", max_batches: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches over a split in order, without augmentation."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; choose one of {SPLITS}")
        data = self._require()[split]
        if not data:
            raise ValueError(f"the {split} split is empty")
        for n, start in enumerate(range(0, len(data), self.eval_batch_size)):
            if max_batches is not None and n >= max_batches:
                return
            yield self._collate(data[start: start + self.eval_batch_size])

    def sketches(self, split: str = "valid") -> list[np.ndarray]:
        """The prepared (normalised) sketches of a split."""
        return self._require()[split]

    def state_dict(self) -> dict[str, Any]:
        """Where the training stream stands: the position after the last batch handed to the trainer."""
        rng, order_rng, order, pos = self._consumed if self._consumed is not None else self._position()
        # tensors and plain values only: checkpoints are read with torch.load(weights_only=True)
        return {"rng": rng, "order_rng": order_rng, "order": torch.from_numpy(order.copy()), "pos": pos,
                "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._stream is not None:  # its thread would go on drawing from the replaced state
            self._stream.close()
        order = state["order"]
        order = (order.cpu().numpy() if torch.is_tensor(order) else np.asarray(order)).astype(np.int64)
        self._set_position((state["rng"], state["order_rng"], order, int(state["pos"])))


class PrefetchStream:
    """Training batches of a :class:`SketchDataModule` prepared ``depth`` ahead in a daemon thread.

    The thread runs the module's synchronous stream and queues each batch with the stream position
    after it. Handing a batch out records that position, so the module's ``state_dict`` is the position
    of the next batch the trainer will get, not of the producer; :meth:`close` stops the thread and
    rewinds the live state to that position, so whatever reads the stream next continues exactly there.
    An exception in the thread is raised by the next ``next()``. ``wait_s`` sums the time ``next()``
    spent waiting for a batch that was not ready yet.
    """

    _END = object()

    def __init__(self, module: SketchDataModule, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.module = module
        self.wait_s = 0.0
        self.batches = 0
        module._consumed = module._position()
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._produce, name="sketchlab-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for batch in self.module._batches():
                if not self._put((batch, self.module._position())):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((self._END, exc))

    def __iter__(self) -> PrefetchStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._closed:
            raise StopIteration
        t0 = time.perf_counter()
        while True:
            try:
                batch, position = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():  # died without a word (cannot happen short of a crash)
                    raise RuntimeError("the data prefetch thread stopped unexpectedly") from None
        self.wait_s += time.perf_counter() - t0
        if batch is self._END:
            self.close()
            raise position
        self.module._consumed = position
        self.batches += 1
        return batch

    def close(self) -> None:
        """Stop the thread and rewind the module's live state to the last batch handed out (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join()
        module = self.module
        if module._consumed is not None:
            module._set_position(module._consumed)
        module._consumed = None
        if module._stream is self:
            module._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
