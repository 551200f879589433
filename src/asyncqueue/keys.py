"""API keys: how they look, how they are checked before any query, and how they are stored."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib

KEY_PREFIX = "aq_"
ALPHABET = string.digits + string.ascii_letters  # base62: safe in headers, shells and URLs
RANDOM_LENGTH = 32  # 62**32 ≈ 2**190 possibilities
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), CHECKSUM_LENGTH)


def generate_key() -> str:
    """A new key: `aq_`, 32 random base62 characters, and a 6-character CRC-32 checksum."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return KEY_PREFIX + random_part + _checksum(random_part)


# The form of a key, checked in one pass (a character loop cost twice as much per request).
_FORM = re.compile(f"{KEY_PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}")


def is_well_formed(key: str) -> bool:
    """True when `key` could be one of ours; a typo or truncation fails here, with no query.
    Not cached: a cache of keys would keep up to its size of them, revoked ones too, in the
    memory of every web process for its life."""
    if len(key) != KEY_LENGTH or _FORM.fullmatch(key) is None:
        return False
    random_part = key[len(KEY_PREFIX) : len(KEY_PREFIX) + RANDOM_LENGTH]
    return secrets.compare_digest(_checksum(random_part), key[len(KEY_PREFIX) + RANDOM_LENGTH :])


def hash_key(key: str) -> bytes:
    # A plain SHA-256 suffices: the key has ~190 bits of entropy, so there is nothing to brute-force.
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]
