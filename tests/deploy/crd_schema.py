"""Validate custom resources against their CRD's structural schema with plain JSON Schema.

A CRD's `openAPIV3Schema` is OpenAPI v3.0 with Kubernetes extensions, not JSON
Schema. `to_json_schema` converts it so that `jsonschema` validates the way the API
server does with strict field validation:

- unknown fields are rejected: an object schema gets `additionalProperties: false`
  unless it says `x-kubernetes-preserve-unknown-fields: true` or gives its own
  `additionalProperties` (a map). The API server prunes (or, with
  `--validate=strict`, rejects) fields that a structural schema does not list;
  an object schema listing no properties at all keeps nothing either;
- `x-kubernetes-int-or-string` accepts an integer or a string;
- `nullable: true` also accepts null;
- OpenAPI 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum` become JSON Schema's
  numeric ones;
- `x-kubernetes-embedded-resource` objects accept apiVersion, kind and metadata.

What is not checked: CEL rules (`x-kubernetes-validations`), list-map key
uniqueness (`x-kubernetes-list-type: map`) and `format` values. The root
`metadata` is the API server's own ObjectMeta; it is checked only for a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

# Keywords that mean the same in OpenAPI v3.0 and JSON Schema 2020-12.
_SAME = (
    "type",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
)
_OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
}


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Convert one structural-schema node (and everything below it) to JSON Schema."""
    out: dict[str, Any] = {k: node[k] for k in _SAME if k in node}
    for bound in ("Minimum", "Maximum"):
        if node.get("exclusive" + bound) is True and bound.lower() in node:
            out["exclusive" + bound] = out.pop(bound.lower())
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    properties = dict(node.get("properties", {}))
    if node.get("x-kubernetes-embedded-resource"):
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        properties.setdefault(
            "metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        )
    if properties:
        out["properties"] = {name: to_json_schema(sub) for name, sub in properties.items()}
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = to_json_schema(extra)
    elif extra is not None:
        out["additionalProperties"] = bool(extra)
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def load_crd(path: Path) -> dict[str, Any]:
    """Read a CustomResourceDefinition from a YAML file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser: 25k-line files
    crd = yaml.load(path.read_text(), Loader=loader)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path}: not a CustomResourceDefinition")
    return crd


def crd_version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one served version of a CRD."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            if not entry.get("served", False):
                raise ValueError(f"{crd['metadata']['name']}: version {version} is not served")
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    names = [entry["name"] for entry in crd["spec"]["versions"]]
    raise ValueError(f"{crd['metadata']['name']}: no version {version}; it has {names}")


def resource_validator(crd: dict[str, Any], version: str) -> jsonschema.Draft202012Validator:
    """A validator for whole custom resources (apiVersion, kind, metadata, spec)."""
    schema = to_json_schema(crd_version_schema(crd, version))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = _OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, obj: Any) -> list[str]:
    """Every validation error as `path: message`, sorted (empty when the object is valid)."""
    found = []
    for error in validator.iter_errors(obj):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"{path}: {error.message}")
    return sorted(found)
