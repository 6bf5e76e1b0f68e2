"""Read or write an environment's vault file (ansible-vault) on the control host, with the vault
password the run was given (--vault-password-file, --vault-id or ANSIBLE_VAULT_PASSWORD_FILE).

Ansible's own vault secrets are used, so the password is never a variable, never a file this
role knows about, never in a log. Errors are one line naming the file, never a value.

    openpolicy.deploy.vault_file: {path: ..., state: read}               -> values, exists
    openpolicy.deploy.vault_file: {path: ..., state: write, values: {}}  -> changed when the content differs
"""

from __future__ import annotations

import os
import tempfile

import yaml
from ansible.errors import AnsibleError
from ansible.parsing.vault import VaultLib, is_encrypted
from ansible.plugins.action import ActionBase

HEADER = (
    "# Secrets of this environment (roles/secrets, docs/secrets.md): vault_* keys the plain\n"
    "# group_vars refer to. Written by the secrets role; edit with `ansible-vault edit`.\n"
)
NO_PASSWORD = (
    "no vault password was given: pass --vault-password-file <file or script> (or set ANSIBLE_VAULT_PASSWORD_FILE)"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line values (PEM keys) as literal blocks, so `ansible-vault edit` shows them as they are."""


def _text(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if value is not None and not isinstance(value, bool | int | float) else value


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        path = os.path.expanduser(str(args["path"]))
        state = args.get("state", "read")
        vault = VaultLib(self._loader._vault.secrets or [])
        try:
            current = self._read(path, vault)
        except AnsibleError as error:
            return {**result, "failed": True, "msg": f"secrets: {path}: {error}"}
        if state == "read":
            return {**result, "changed": False, "exists": current is not None, "values": current or {}}

        values = _plain(args.get("values") or {})
        if current == values:
            return {**result, "changed": False}
        if not vault.secrets:
            return {**result, "failed": True, "msg": f"secrets: cannot write {path}: {NO_PASSWORD}"}
        if not self._task.check_mode:
            try:
                vault_id, secret = self._write_secret(vault, args.get("vault_id"))
            except AnsibleError as error:
                return {**result, "failed": True, "msg": f"secrets: cannot write {path}: {error}"}
            text = HEADER + yaml.dump(values, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1000)
            encrypted = vault.encrypt(text, secret=secret, vault_id=vault_id)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handle, staging = tempfile.mkstemp(prefix=".vault.", dir=os.path.dirname(path) or ".")
            with os.fdopen(handle, "wb") as out:
                out.write(encrypted)
            os.chmod(staging, 0o600)
            os.replace(staging, path)
        return {**result, "changed": True}

    @staticmethod
    def _read(path: str, vault: VaultLib):
        """The decrypted content, or None when the file does not exist."""
        if not os.path.exists(path):
            return None
        with open(path, "rb") as handle:
            data = handle.read()
        if not is_encrypted(data):
            raise AnsibleError("is not encrypted: encrypt it with `ansible-vault encrypt` before any run")
        if not vault.secrets:
            raise AnsibleError(f"is encrypted and {NO_PASSWORD}")
        try:
            text = vault.decrypt(data)
        except AnsibleError:
            raise AnsibleError("the vault password given does not open it (wrong password or vault id)") from None
        return _plain(yaml.safe_load(text) or {})

    @staticmethod
    def _write_secret(vault: VaultLib, wanted: str | None):
        for vault_id, secret in vault.secrets:
            if not wanted or vault_id == wanted:
                return vault_id, secret
        raise AnsibleError(f"no vault password with the vault id {wanted!r} was given")
