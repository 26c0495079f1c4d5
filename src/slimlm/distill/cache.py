"""On-disk cache of the teacher's top-k logits per training row, reused across runs.

The key is (teacher weights hash, the packed training rows' hash, k): the same teacher on the same data
with the same packing reuses the cache whatever the student, loss weights or learning rate. Values are
stored as fp16 and ids as int32 in two ``.npy`` memory maps of shape (N, T, k), filled lazily as training
visits rows; a row counts as cached only once its ``done`` flag is persisted, after the maps are flushed,
so a killed run never reads half-written rows. Size: N*T*k*6 bytes (k=64: ~0.4 KB per token).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from slimlm._io import cache_dir


def cache_key(teacher_hash: str, rows: torch.Tensor, k: int) -> str:
    h = hashlib.sha256(f"{teacher_hash}:{tuple(rows.shape)}:{k}".encode())
    h.update(rows.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TopKCache:
    def __init__(self, root: Path, n: int, seq_len: int, k: int, rank: int = 0):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.rank = root, rank
        shape = (n, seq_len, k)
        vals, ids = root / "values.npy", root / "indices.npy"
        if not vals.exists() or not ids.exists():
            tmp_v, tmp_i = root / f".values.{rank}.npy", root / f".indices.{rank}.npy"
            np.lib.format.open_memmap(tmp_v, mode="w+", dtype=np.float16, shape=shape).flush()
            np.lib.format.open_memmap(tmp_i, mode="w+", dtype=np.int32, shape=shape).flush()
            if not vals.exists():  # another process may have won the race; its file is equivalent
                tmp_v.replace(vals)
                tmp_i.replace(ids)
            tmp_v.unlink(missing_ok=True)
            tmp_i.unlink(missing_ok=True)
        self.values = np.lib.format.open_memmap(vals, mode="r+")
        self.indices = np.lib.format.open_memmap(ids, mode="r+")
        self.done = np.zeros(n, dtype=bool)
        for f in root.glob("done*.npy"):
            self.done |= np.load(f)
        self.hits = self.misses = 0

    def get(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        r = rows.numpy()
        if not self.done[r].all():
            self.misses += len(r)
            return None
        self.hits += len(r)
        return torch.from_numpy(self.values[r].astype(np.float32)), torch.from_numpy(self.indices[r].astype(np.int64))

    def put(self, rows: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> None:
        r = rows.numpy()
        self.values[r] = values.to(torch.float16).numpy()
        self.indices[r] = indices.to(torch.int32).numpy()
        self._new = getattr(self, "_new", [])
        self._new.append(r)

    def commit(self) -> None:
        """Flush the maps, then persist the done flags of the rows written since the last commit."""
        if not getattr(self, "_new", None):
            return
        self.values.flush()
        self.indices.flush()
        for r in self._new:
            self.done[r] = True
        self._new = []
        tmp = self.root / f".done-{self.rank}.tmp.npy"
        np.save(tmp, self.done)
        tmp.replace(self.root / f"done-{self.rank}.npy")


def open_cache(teacher_hash: str, rows: torch.Tensor, k: int, rank: int = 0) -> TopKCache:
    key = cache_key(teacher_hash, rows, k)
    return TopKCache(cache_dir("teacher-topk", key), rows.shape[0], rows.shape[1], k, rank)
