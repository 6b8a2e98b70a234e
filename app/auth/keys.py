"""API key format: `llk_` and 43 URL-safe characters (256 random bits). Stored as SHA-256."""

import hashlib
import secrets

KEY_PREFIX = "llk_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    return key[:12]
