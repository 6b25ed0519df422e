"""What Kubernetes accepts: its resource quantities and the dask-kubernetes DaskJob CRD.

Quantities are read and printed as k8s.io/apimachinery's ``resource.Quantity`` does; a DaskJob is
validated against the CRD shipped in the installed dask-kubernetes package.

Pure: ``yaml`` and ``jsonschema`` are imported where they are used.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

API_VERSION = "kubernetes.dask.org/v1"
KIND = "DaskJob"
_CRD = "operator/deployment/helm/dask-kubernetes-operator/crds/daskjob.yaml"


class ManifestError(ValueError):
    """The manifest (or the task it comes from) is not what Kubernetes would accept."""


# --- Kubernetes quantities, as k8s.io/apimachinery's resource.Quantity reads and prints them ---

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:[eE](?P<exp>[+-]?[0-9]+)|(?P<suffix>[KMGTPE]i|[numkMGTPE]))?"
)
_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_DECIMAL_POWER = {suffix: power for power, suffix in _DECIMAL.items()}


def parse_quantity(text: str) -> tuple[Fraction, str]:
    """``'32Gi'`` -> (value, format); format is 'BinarySI', 'DecimalSI' or 'DecimalExponent'."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ManifestError(f"{text!r} is not a Kubernetes quantity")
    value = Fraction(match["num"]) * (-1 if match["sign"] == "-" else 1)
    suffix = match["suffix"] or ""
    if match["exp"] is not None:
        value, fmt = value * Fraction(10) ** int(match["exp"]), "DecimalExponent"
    elif suffix.endswith("i"):
        value, fmt = value * 1024 ** _BINARY.index(suffix), "BinarySI"
    else:
        value, fmt = value * Fraction(10) ** _DECIMAL_POWER[suffix], "DecimalSI"
    # Kubernetes keeps nano precision and rounds anything finer up.
    return Fraction(math.ceil(value * 10**9), 10**9), fmt


def canonical_quantity(text: str) -> str:
    """The text Kubernetes (and so the plugin's ``Quantity.String()``) prints for a quantity.

    ``'1024Mi'`` -> ``'1Gi'``, ``'1000m'`` -> ``'1'``, ``'1.5Gi'`` -> ``'1536Mi'``.
    """
    value, fmt = parse_quantity(text)
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (abs(value) < 1024 or value.denominator != 1):
        fmt = "DecimalSI"  # Kubernetes avoids rounding and tiny binary values this way
    if fmt == "BinarySI":
        number, power = int(value), 0
        while number % 1024 == 0 and power < len(_BINARY) - 1:
            number, power = number // 1024, power + 1
        return f"{number}{_BINARY[power]}"
    mantissa, exponent = int(value * 10**9), -9
    while mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    shift = exponent % 3  # the exponent goes down to a multiple of 3
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    if fmt == "DecimalSI" and exponent in _DECIMAL:
        return f"{mantissa}{_DECIMAL[exponent]}"
    return f"{mantissa}e{exponent}" if exponent else str(mantissa)


def quantity_value(text: str) -> int:
    """``Quantity.Value()``: the quantity rounded up to a whole number (``'500m'`` -> 1)."""
    return math.ceil(parse_quantity(text)[0])


# --- validation against the CRD --------------------------------------------------------------


def crd_path() -> Path:
    """The DaskJob CRD shipped in the installed dask-kubernetes package."""
    spec = importlib.util.find_spec("dask_kubernetes")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ManifestError("dask-kubernetes is not installed; it ships the DaskJob CRD")
    return Path(next(iter(spec.submodule_search_locations))) / _CRD


def _json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON schema: ``nullable`` becomes a type union,
    ``x-kubernetes-*`` keys go, and objects with declared properties reject unknown fields
    (as ``kubectl``'s strict field validation does), so a misspelt field is caught."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":  # field name -> schema: the names are data, never keywords
            schema[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif not key.startswith("x-kubernetes-"):
            schema[key] = _json_schema(value)
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


@functools.cache  # the CRD is ~0.5 MB of YAML: read it once per process
def daskjob_schema() -> dict[str, Any]:
    """The JSON schema of a whole DaskJob object, from the CRD's ``openAPIV3Schema``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_path().read_text(), Loader=loader)  # a safe loader (C if available)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == API_VERSION.split("/")[1])
    schema: dict[str, Any] = _json_schema(version["schema"]["openAPIV3Schema"])
    # The API server adds the object envelope; the CRD schema leaves it out.
    schema["properties"].update(
        apiVersion={"const": API_VERSION},
        kind={"const": KIND},
        metadata={
            "type": "object",
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            "additionalProperties": True,
        },
    )
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` naming the failing path if the CRD schema rejects it."""
    import jsonschema

    validator = jsonschema.Draft7Validator(daskjob_schema())
    errors = sorted(
        validator.iter_errors(manifest), key=lambda e: (list(e.absolute_path), e.message)
    )
    if errors:
        error = jsonschema.exceptions.best_match(errors) or errors[0]
        raise ManifestError(
            f"DaskJob {_path(error.absolute_path)}: {error.message}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML, in the field order it was built in."""
    import yaml

    return str(yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False))
