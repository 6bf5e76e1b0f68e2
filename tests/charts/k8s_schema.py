"""Offline validation of rendered manifests against the Kubernetes 1.36 OpenAPI v3 schemas.

The schemas come from the Go module cache, nothing is downloaded at test time:
- core and built-in APIs: k8s.io/kubernetes@<version>/api/openapi-spec/v3/*.json
  (`go mod download k8s.io/kubernetes@v1.36.3` puts them there);
- the monitoring.coreos.com CRDs (ServiceMonitor, PrometheusRule): the CRD manifests of
  github.com/prometheus-operator/prometheus-operator@<version>/example/prometheus-operator-crd.

Validation is strict, like `kubeconform -strict`: an object schema that lists its properties
rejects any other key, so a misspelt field fails instead of being dropped by the server.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import yaml

VERSIONS = Path(__file__).resolve().parents[2] / "versions.toml"


def _pin(name: str, default: str) -> str:
    """A [go] pin of versions.toml (the project's one place for versions), else the default."""
    try:
        return tomllib.loads(VERSIONS.read_text()).get("go", {}).get(name, default)
    except (OSError, tomllib.TOMLDecodeError):
        return default


KUBERNETES_VERSION = _pin("kubernetes", "v1.36.3")
# The module whose example/prometheus-operator-crd holds the ServiceMonitor/PrometheusRule CRDs.
PROMETHEUS_OPERATOR_VERSION = _pin("prometheus_operator", "v0.85.0")


def go_mod_cache() -> Path:
    """The Go module cache (GOMODCACHE, else GOPATH/pkg/mod, else ~/go/pkg/mod)."""
    if os.environ.get("GOMODCACHE"):
        return Path(os.environ["GOMODCACHE"])
    gopath = os.environ.get("GOPATH", "").split(os.pathsep)[0] or str(Path.home() / "go")
    return Path(gopath) / "pkg" / "mod"


def kubernetes_spec_dir() -> Path:
    return go_mod_cache() / f"k8s.io/kubernetes@{KUBERNETES_VERSION}/api/openapi-spec/v3"


def monitoring_crd_dir() -> Path:
    module = f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}"
    return go_mod_cache() / module / "example/prometheus-operator-crd"


def monitoring_crd_files() -> list[Path]:
    """The two CRDs the service chart can render objects of (for a cluster that needs them)."""
    return [
        monitoring_crd_dir() / "monitoring.coreos.com_servicemonitors.yaml",
        monitoring_crd_dir() / "monitoring.coreos.com_prometheusrules.yaml",
    ]


def _strict(node: object) -> object:
    """Close every object schema that lists its properties and let nullable fields be null."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


class SchemaStore:
    """Kind -> validator, built once from the module cache."""

    def __init__(self) -> None:
        spec_dir = kubernetes_spec_dir()
        if not spec_dir.is_dir():
            raise FileNotFoundError(
                f"{spec_dir} is missing: run `go mod download k8s.io/kubernetes@{KUBERNETES_VERSION}`"
            )
        components: dict[str, dict] = {}
        self._names: dict[tuple[str, str, str], str] = {}
        for path in sorted(spec_dir.glob("*.json")):
            schemas = json.loads(path.read_text()).get("components", {}).get("schemas", {})
            for name, schema in schemas.items():
                components.setdefault(name, schema)
                for gvk in schema.get("x-kubernetes-group-version-kind", []):
                    key = (gvk["group"], gvk["version"], gvk["kind"])
                    self._names.setdefault(key, name)
        self._root = {"components": {"schemas": _strict(components)}}
        self._crds: dict[tuple[str, str, str], dict] = {}
        for path in monitoring_crd_files():
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: run `go mod download "
                    f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}`"
                )
            self.add_crd(yaml.safe_load(path.read_text()))

    def add_crd(self, crd: dict) -> None:
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            self._crds[(group, version["name"], kind)] = schema

    @functools.cache  # noqa: B019 - one store per test session
    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        group, _, version = api_version.rpartition("/")
        key = (group, version, kind)
        if key in self._crds:
            return jsonschema.Draft7Validator(self._crds[key])
        if key not in self._names:
            raise KeyError(f"no Kubernetes {KUBERNETES_VERSION} schema for {api_version} {kind}")
        schema = {"$ref": f"#/components/schemas/{self._names[key]}", **self._root}
        return jsonschema.Draft7Validator(schema)

    def errors(self, manifest: dict) -> list[str]:
        """Readable errors of one manifest; empty when it is valid."""
        where = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        try:
            validator = self.validator(manifest.get("apiVersion", ""), manifest.get("kind", ""))
        except KeyError as exc:
            return [f"{where}: {exc.args[0]}"]
        found = []
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(part) for part in error.absolute_path) or "(root)"
            found.append(f"{where}: {path}: {error.message[:300]}")
        return found


@functools.cache
def store() -> SchemaStore:
    return SchemaStore()


def validate_all(manifests: Iterable[dict]) -> list[str]:
    errors: list[str] = []
    for manifest in manifests:
        errors.extend(store().errors(manifest))
    return errors
