"""Schema validation of deploy/: every overlay renders, every object validates offline.

- `kubectl kustomize` renders each overlay (the `rendered` fixture);
- built-in kinds pass `kubernetes-validate --strict` for Kubernetes 1.37 (unknown
  fields rejected); any WARN (no schema for a kind) counts as a failure;
- custom resources (the RayJob) validate against KubeRay's CRD schema with unknown
  fields rejected (tests/deploy/crd_schema.py);
- yamllint --strict passes over deploy/.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy import crd_schema
from tests.deploy.conftest import DEPLOY, run_tool, tool
from tests.deploy.manifests import by_kind

KUBERNETES_VERSION = "1.37.0"  # the newest release kubernetes-validate 1.37 knows
CUSTOM_GROUPS = {"ray.io": "ray.io_{plural}.yaml"}
EXPECTED_KINDS = {
    "Namespace",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "RayJob",
}


def _is_custom(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] in CUSTOM_GROUPS


@pytest.fixture(scope="module")
def rayjob_validator(crd_dir: Path) -> jsonschema.Draft202012Validator:
    """A validator for ray.io/v1 RayJobs built from KubeRay's CRD."""
    crd = crd_schema.load_crd(crd_dir / "ray.io_rayjobs.yaml")
    return crd_schema.resource_validator(crd, "v1")


def test_overlay_renders_every_part(docs: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in docs}
    assert kinds == EXPECTED_KINDS, (
        f"missing {EXPECTED_KINDS - kinds}, extra {kinds - EXPECTED_KINDS}"
    )
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in ("stride-inference", "stride-analysis"):
        assert ("Deployment", name) in names and ("Service", name) in names


def test_everything_in_the_stride_namespace(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "stride", doc["metadata"]["name"]


def test_builtin_kinds_pass_kubernetes_validate(
    docs: list[dict[str, Any]], overlay: str, tmp_path: Path
) -> None:
    builtin = [doc for doc in docs if not _is_custom(doc)]
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    args = [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)]
    result = run_tool(args)
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if not line.startswith("INFO ")]
    assert result.returncode == 0 and not problems, output
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == len(builtin), output  # one INFO line per object: none was skipped


def test_jobs_pass_kubernetes_validate(jobs: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all(jobs, sort_keys=False))
    args = [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)]
    result = run_tool(args)
    passed = [line for line in result.stdout.splitlines() if " passed for resource " in line]
    assert result.returncode == 0 and len(passed) == len(jobs), result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    # Guards the test above: strict mode and the version flag must really bite.
    deployment = copy.deepcopy(by_kind(docs, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run_tool(
        [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)]
    )
    assert result.returncode != 0 and "imagePullPolicyy" in result.stdout, result.stdout


def test_rayjob_matches_the_kuberay_crd(
    docs: list[dict[str, Any]], rayjob_validator: jsonschema.Draft202012Validator
) -> None:
    custom = [doc for doc in docs if _is_custom(doc)]
    assert [doc["kind"] for doc in custom] == ["RayJob"]
    assert custom[0]["apiVersion"] == "ray.io/v1"
    assert crd_schema.errors(rayjob_validator, custom[0]) == []


def test_rayjob_cluster_matches_the_raycluster_crd(
    docs: list[dict[str, Any]], crd_dir: Path
) -> None:
    # The RayJob embeds a RayClusterSpec; KubeRay builds a RayCluster from it.
    crd = crd_schema.load_crd(crd_dir / "ray.io_rayclusters.yaml")
    spec_schema = crd_schema.crd_version_schema(crd, "v1")["properties"]["spec"]
    validator = jsonschema.Draft202012Validator(crd_schema.to_json_schema(spec_schema))
    (rayjob,) = by_kind(docs, "RayJob")
    assert crd_schema.errors(validator, rayjob["spec"]["rayClusterSpec"]) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "entrypointz"), "x", "'entrypointz' was unexpected"),
        (
            ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "nodeSelectorr"),
            {},
            "'nodeSelectorr' was unexpected",
        ),
        (
            ("spec", "rayClusterSpec", "workerGroupSpecs", 0, "replicas"),
            "two",
            "'two' is not of type 'integer'",
        ),
        (("spec", "shutdownAfterJobFinishes"), "yes", "'yes' is not of type 'boolean'"),
        (("kind",), "RayCluster", "'RayJob' was expected"),
    ],
)
def test_crd_validation_rejects_bad_rayjobs(
    docs: list[dict[str, Any]],
    rayjob_validator: jsonschema.Draft202012Validator,
    path: tuple[str | int, ...],
    value: Any,
    expected: str,
) -> None:
    rayjob = copy.deepcopy(by_kind(docs, "RayJob")[0])
    node: Any = rayjob
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    found = crd_schema.errors(rayjob_validator, rayjob)
    assert any(expected in error for error in found), found


def test_structural_schema_conversion() -> None:
    schema = crd_schema.to_json_schema(
        {
            "type": "object",
            "properties": {
                "strict": {"type": "object", "properties": {"a": {"type": "string"}}},
                "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "port": {
                    "x-kubernetes-int-or-string": True,
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                },
                "maybe": {"type": "string", "nullable": True},
                "positive": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            },
        }
    )
    validator = jsonschema.Draft202012Validator(schema)

    def ok(obj: dict[str, Any]) -> bool:
        return validator.is_valid(obj)

    assert ok({"strict": {"a": "x"}, "open": {"anything": [1]}, "map": {"k": 1}})
    assert not ok({"strict": {"b": "x"}})
    assert not ok({"map": {"k": "x"}})
    assert ok({"port": 8080}) and ok({"port": "http"}) and not ok({"port": 1.5})
    assert ok({"maybe": None}) and not ok({"strict": None})
    assert ok({"positive": 0.1}) and not ok({"positive": 0})
    assert not ok({"unknown": 1})


def test_yamllint_passes_over_deploy() -> None:
    config = DEPLOY / ".yamllint.yaml"
    result = run_tool(
        [tool("yamllint"), "--strict", "-f", "parsable", "-c", str(config), str(DEPLOY)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_config_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: yes\nkey: 2\nlist:\n- a\n")  # truthy, duplicate key, sequence indent
    config = DEPLOY / ".yamllint.yaml"
    result = run_tool([tool("yamllint"), "--strict", "-f", "parsable", "-c", str(config), str(bad)])
    assert result.returncode != 0
    for rule in ("truthy", "key-duplicates", "indentation"):
        assert f"({rule})" in result.stdout, result.stdout
