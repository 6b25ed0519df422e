"""The data catalog of the Flyte Admin stand-in: outputs of cached tasks (TEST DOUBLE).

Flyte caches a whole task when its template says ``metadata.discoverable`` (flytekit
``cache=True``).  Propeller asks Flyte's data catalog before running such a task and writes the
outputs there after a successful run.  The catalog is keyed as propeller keys it
(flytepropeller ``pkg/controller/nodes/catalog/datacatalog/transformer.go``):

- the *dataset*: project and domain of the task, name ``flyte_task-<task name>``, version
  ``<discovery_version>-<inputs signature>-<outputs signature>`` (each signature the first 8
  characters of a hash of the interface's variable map), so a changed interface never reuses an
  old result even under the same cache version;
- the *artifact tag*: ``flyte_cached-<hash of the input literals>``; an input literal with its
  ``hash`` field set (flytekit's ``HashMethod``, e.g. a DataFrame uploaded to a new place on every
  run) counts by that hash only, recursively through collections and maps, and
  ``cache_ignore_input_vars`` are left out.

The task *version* is not part of the key (as in Flyte): a task re-registered with a new version
but the same name, cache version and interface reuses the old results.

Hashes: Flyte hashes the jsonpb form of a message with objecthash; the stand-in takes the SHA-256 of
the message's deterministic protobuf serialization instead.  Both are stable for equal messages,
so hits and misses are the same; the key strings are not byte-equal to Flyte's.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import dataclass, field

from flyteidl.core import catalog_pb2, identifier_pb2, interface_pb2, literals_pb2, tasks_pb2

CACHED_TASK_TAG = "flyte_cached"
TASK_NAMESPACE = "flyte_task"
MAX_PARAM_HASH_LENGTH = 8


def _hash(message: object) -> bytes:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()  # type: ignore[attr-defined]


def _text(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def hashify(literal: literals_pb2.Literal) -> literals_pb2.Literal:
    """The literal as the cache sees it: its ``hash`` alone when set, else its value (with the
    items of collections and maps hashified too)."""
    if literal.hash:
        return literals_pb2.Literal(hash=literal.hash)
    if literal.HasField("collection"):
        return literals_pb2.Literal(
            collection=literals_pb2.LiteralCollection(
                literals=[hashify(item) for item in literal.collection.literals]
            )
        )
    if literal.HasField("map"):
        return literals_pb2.Literal(
            map=literals_pb2.LiteralMap(
                literals={k: hashify(v) for k, v in literal.map.literals.items()}
            )
        )
    return literal


def inputs_hash(inputs: literals_pb2.LiteralMap, ignore: tuple[str, ...] = ()) -> str:
    """The hash of the input literals that names the cached result (the artifact tag's tail)."""
    kept = {k: hashify(v) for k, v in inputs.literals.items() if k not in ignore}
    return _text(_hash(literals_pb2.LiteralMap(literals=kept)))


def signature_hash(interface: interface_pb2.TypedInterface) -> str:
    """``<inputs>-<outputs>``: short hashes of the task interface's variable maps."""
    inputs = _text(_hash(interface.inputs))[:MAX_PARAM_HASH_LENGTH]
    outputs = _text(_hash(interface.outputs))[:MAX_PARAM_HASH_LENGTH]
    return f"{inputs}-{outputs}"


@dataclass(frozen=True)
class CatalogKey:
    """Where the catalog keeps the outputs of one task for one set of inputs."""

    project: str
    domain: str
    dataset: str  # flyte_task-<task name>
    version: str  # <discovery_version>-<signature>
    tag: str  # flyte_cached-<inputs hash>

    @property
    def dataset_id(self) -> identifier_pb2.Identifier:
        return identifier_pb2.Identifier(
            resource_type=identifier_pb2.DATASET,
            project=self.project,
            domain=self.domain,
            name=self.dataset,
            version=self.version,
        )


class NotCacheable(ValueError):
    """A discoverable task the catalog cannot key (Flyte: an empty discovery version)."""


def catalog_key(
    task_id: identifier_pb2.Identifier,
    template: tasks_pb2.TaskTemplate,
    inputs: literals_pb2.LiteralMap,
) -> CatalogKey | None:
    """The key of this task + inputs; None when the task is not cached (not discoverable)."""
    if not template.metadata.discoverable:
        return None
    cache_version = template.metadata.discovery_version.strip()
    if not cache_version:
        raise NotCacheable(f"task {task_id.name} is cached but has an empty discovery_version")
    ignore = tuple(template.metadata.cache_ignore_input_vars)
    return CatalogKey(
        project=task_id.project,
        domain=task_id.domain,
        dataset=f"{TASK_NAMESPACE}-{task_id.name}",
        version=f"{cache_version}-{signature_hash(template.interface)}",
        tag=f"{CACHED_TASK_TAG}-{inputs_hash(inputs, ignore)}",
    )


@dataclass(frozen=True)
class CatalogEntry:
    """Cached outputs and the task execution that produced them."""

    key: CatalogKey
    outputs: literals_pb2.LiteralMap
    source: identifier_pb2.TaskExecutionIdentifier
    artifact_id: str
    created_at: float = field(default_factory=time.time)

    def metadata(self) -> catalog_pb2.CatalogMetadata:
        """The ``catalog_key`` Admin shows in a node execution's ``task_node_metadata``."""
        return catalog_pb2.CatalogMetadata(
            dataset_id=self.key.dataset_id,
            artifact_tag=catalog_pb2.CatalogArtifactTag(
                artifact_id=self.artifact_id, name=self.key.tag
            ),
            source_task_execution=self.source,
        )

    @property
    def source_execution(self) -> str:
        """Name of the execution whose outputs these are."""
        return self.source.node_execution_id.execution_id.name


class Catalog:
    """Cached task outputs by :class:`CatalogKey`. The first successful run of a key stores it;
    later runs of the same key (started before it was stored) leave it as it is, unless they were
    started with ``overwrite_cache``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[CatalogKey, CatalogEntry] = {}

    def get(self, key: CatalogKey) -> CatalogEntry | None:
        with self._lock:
            return self._entries.get(key)

    def put(
        self,
        key: CatalogKey,
        outputs: literals_pb2.LiteralMap,
        source: identifier_pb2.TaskExecutionIdentifier,
        *,
        overwrite: bool = False,
    ) -> CatalogEntry:
        """Stores the outputs (unless the key holds some and ``overwrite`` is False); returns
        the entry the key now holds."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or overwrite:
                artifact_id = hashlib.sha256(
                    f"{key}{source.SerializeToString(deterministic=True)!r}".encode()
                ).hexdigest()[:32]
                entry = CatalogEntry(key, outputs, source, artifact_id)
                self._entries[key] = entry
            return entry

    def entries(self) -> list[CatalogEntry]:
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        """Forgets every cached result (like evicting the whole catalog)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogKey",
    "NotCacheable",
    "catalog_key",
    "hashify",
    "inputs_hash",
    "signature_hash",
]
