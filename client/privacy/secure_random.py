"""The private randomness of a DP round: a ChaCha20 keystream under a fresh 256-bit key.

DP-SGD protects a patient only while the coordinator cannot predict the Gaussian noise or which
patients a step sampled. torch's CPU generator keeps 32 bits of its seed, so a torch seed is a
secret a cluster can search (the noise of a parameter group no patient informs is a pure function
of it). Here every random number of the mechanism comes instead from ChaCha20 (OpenSSL, through
the ``cryptography`` package that Flower already depends on) keyed with 32 bytes from
:func:`secrets.token_bytes`: the key is made per round, lives only in this process's memory and is
never written, logged or sent. Recovering it from released values means breaking ChaCha20.

Uniforms take 53 bits of keystream each; Gaussians come from the Box-Muller transform in float64.
As Opacus' ``secure_mode`` does (Holohan & Braghin 2021, section 5.1, against floating-point
attacks on the noise), each noise value is the sum of four draws divided by two.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32  # 256-bit secret


class SecureRandom:
    """Independent keystreams of one key: ``stream`` picks the ChaCha20 nonce (e.g. one for the
    noise, one for sampling), so the values of one stream say nothing about another."""

    def __init__(self, key: bytes | None = None, stream: int = 0) -> None:
        key = secrets.token_bytes(KEY_BYTES) if key is None else key
        if len(key) != KEY_BYTES:
            raise ValueError(f"a ChaCha20 key has {KEY_BYTES} bytes, got {len(key)}")
        nonce = (0).to_bytes(4, "little") + stream.to_bytes(12, "little")  # block counter, nonce
        self._cipher = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()

    def _words(self, n: int) -> np.ndarray:
        return np.frombuffer(self._cipher.update(bytes(8 * n)), dtype=np.uint64)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` floats in [0, 1), 53 random bits each."""
        return (self._words(n) >> np.uint64(11)) * (2.0 ** -53)

    def choice_index(self, counts: np.ndarray) -> np.ndarray:
        """For each entry of ``counts`` (>= 1), an index in [0, count) drawn uniformly."""
        return np.minimum((self.uniform(len(counts)) * counts).astype(np.int64), counts - 1)

    def standard_normal(self, n: int) -> np.ndarray:
        """``n`` standard Gaussian floats (Box-Muller over keystream uniforms)."""
        half = (n + 1) // 2
        u = self.uniform(2 * half)
        radius = np.sqrt(-2.0 * np.log1p(-u[:half]))  # 1 - u in (0, 1]: log is finite
        angle = 2.0 * np.pi * u[half:]
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]

    def gaussian_noise(self, n: int, std: float) -> np.ndarray:
        """``n`` values of N(0, std^2), each the sum of four draws over two (Opacus' secure mode)."""
        draws = self.standard_normal(4 * n).reshape(4, n)
        return draws.sum(axis=0) * (std / 2.0)
