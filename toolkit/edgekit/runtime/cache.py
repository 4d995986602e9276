"""A bounded LRU cache of outputs keyed by a hash of the input bytes.

Values are (outputs, variant id). Arrays go in as private copies and come out as fresh copies:
a caller that edits its result must not change what the next caller gets.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np


def key_of(inputs: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(name.encode())
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.digest()


class OutputCache:
    def __init__(self, size: int):
        self.size = size
        self.hits = self.misses = 0
        self._data: OrderedDict[bytes, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes):
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
        outputs, variant = value
        return {k: v.copy() for k, v in outputs.items()}, variant

    def put(self, key: bytes, value: tuple) -> None:
        outputs, variant = value
        frozen = {k: np.array(v, copy=True) for k, v in outputs.items()}
        for array in frozen.values():
            array.flags.writeable = False
        with self._lock:
            self._data[key] = (frozen, variant)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
