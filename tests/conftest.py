"""What every test session shares: the operator's local environment stays as the tests found it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.helpers import REPO

# `make up`'s vault, encrypted with .local/vault-password. A test that stored its secrets here
# would encrypt them with the tests' password, and the next `make up` would stop at
# "Decryption failed": tests pass secrets_vault_file under their own tmp_path instead.
LOCAL_VAULT = REPO / "inventories" / "local" / "group_vars" / "all" / "vault.yml"


def _digest() -> str | None:
    return hashlib.sha256(LOCAL_VAULT.read_bytes()).hexdigest() if LOCAL_VAULT.exists() else None


@pytest.fixture(scope="session", autouse=True)
def local_vault_untouched() -> Iterator[None]:
    before = _digest()
    yield
    assert _digest() == before, f"a test wrote {LOCAL_VAULT.relative_to(REPO)}: give it a secrets_vault_file of its own"
