"""``%%flyte_dask --remote --cache``: Flyte's task cache, end to end.

A real InteractiveShell and the real FlyteRemote client against the Flyte Admin stand-in
(tests/flyte_admin, a test double) and its data catalog (catalog.py): a discoverable task whose
key (task name, cache version, interface, input hashes) is in the catalog is answered from it
with no pod and no cluster; the node says CACHE_HIT, and the run is "cached" as a local cache hit.

One stand-in serves the module (no nannies: about a second less per run). ``primed`` runs the
cell once with ``--cache`` (a miss that stores its result); each test then changes one thing.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from flyte_admin import FlyteAdminStandIn, processes_gone
from flyteidl.core import catalog_pb2
from flytekit.configuration import Config
from flytekit.remote import FlyteRemote
from test_remote import IMAGE, execution_of

CELL = """\
from distributed import Client
client = Client()
result = client.gather(client.map(inc, range(n)))
scaled = frame.assign(value=frame.value * n)
sum(result)
"""
CLUSTER_PHASES = {"starting cluster", "running", "queued"}


def define_inputs(shell, n: int = 6, values: range = range(6)) -> None:
    """``inc`` (a notebook function: pickled, hashed by source), ``n`` (an integer literal) and
    ``frame`` (a DataFrame: uploaded to a new place on every run, hashed by content)."""
    shell.run_cell("def inc(x):\n    return x + 1\n", store_history=False)
    shell.user_ns["n"] = n
    shell.user_ns["frame"] = pd.DataFrame({"key": [i % 2 for i in values], "value": values})


def run(shell, admin: FlyteAdminStandIn, flags: str, out: str):
    line = f"--remote --config {admin.config_path} --image {IMAGE} --workers 1 {flags} --out {out}"
    value = shell.run_cell_magic("flyte_dask", line, CELL)
    return value, shell.user_ns[out]


def assert_real_run(admin: FlyteAdminStandIn, handle, cache_status: str) -> None:
    """The run started a cluster and a job runner, and was not answered from the cache."""
    seen = execution_of(admin, handle)
    assert handle.status == "succeeded" and not handle.cache_hit
    assert "cached from" not in handle.details
    assert "starting cluster" in handle.phases and "running" in handle.phases
    assert seen.cache_status_name == cache_status
    assert seen.workers_started == 1 and seen.cluster["scheduler_pid"] and seen.task_pid
    assert seen.returncode == 0


@pytest.fixture(scope="module")
def primed(admin, _ipython):
    """The cell run once with ``--cache``: a miss whose result the catalog now holds."""
    shell = _ipython
    shell.reset(new_session=False)
    define_inputs(shell)
    value, handle = run(shell, admin, "--cache", "first")
    outputs = {k: shell.user_ns[k] for k in ("result", "scaled")}
    shell.reset(new_session=False)
    return value, handle, outputs


@pytest.fixture
def stand_in(admin: FlyteAdminStandIn) -> FlyteAdminStandIn:
    admin.clear_calls()
    return admin


def test_an_unchanged_cell_with_equal_inputs_is_a_cache_hit_without_a_cluster(
    shell, stand_in, primed
):
    admin = stand_in
    first_value, first, first_outputs = primed
    # The first run missed, ran on its own cluster, and stored its result.
    assert_real_run(admin, first, "CACHE_POPULATED")
    assert first.cache_stored and "cache: miss, stored" in first.summary_text()
    assert first_value == sum(i + 1 for i in range(6))
    source = execution_of(admin, first)
    assert source.catalog_key is not None and source.cache_entry.source_execution == source.name
    # The DataFrame carries its content hash (the product's HashMethod): the key uses only that.
    assert source.inputs.literals["frame"].hash

    define_inputs(shell)  # equal values, defined anew (as after a kernel restart)
    start = time.monotonic()
    value, second = run(shell, admin, "--cache", "second")
    elapsed = time.monotonic() - start

    # What the notebook shows: a cached run, outputs equal and bound, no cluster phases.
    assert second.cache_hit is True and second.status == "cached"
    assert value == first_value
    assert shell.user_ns["result"] == first_outputs["result"]
    pd.testing.assert_frame_equal(shell.user_ns["scaled"], first_outputs["scaled"])
    summary = second.summary_text()
    assert "cache: hit" in summary and "status: cached" in summary
    assert not CLUSTER_PHASES & set(second.phases), second.phases
    assert second.shape is None and "used:" not in summary  # no cluster was used
    # no cluster, so no report of its own (the cached one is the first run's) and no link
    assert first.report_path is not None and second.report_path is None
    assert second.to_record()["report"] is None and "report:" not in summary
    assert first.shape is not None and "used:" in first.summary_text()
    assert second.details["cached from"].startswith(f"execution {source.id.project}/")
    assert source.name in second.details["cached from"]
    assert elapsed < first.duration

    # What the stand-in saw: answered from the catalog; no scheduler, worker or job runner.
    seen = execution_of(admin, second)
    assert seen.name != source.name and seen.phase_name == "SUCCEEDED"
    assert seen.cache_status_name == "CACHE_HIT" and seen.cache_entry is source.cache_entry
    assert seen.cluster == {} and seen.dask_job is None and seen.workers_started == 0
    assert seen.task_pid is None and seen.pids == [] and seen.task_args == []
    assert seen.outputs == source.outputs and seen.outputs_uri != source.outputs_uri
    assert any("cache hit" in event.note for event in seen.events)
    # Nothing was registered or uploaded for it, and flytekit found no task execution (as in
    # Flyte v1: a cache hit has none).
    assert not admin.calls_to("CreateTask")
    assert not admin.calls_to("GetTaskExecution") and admin.calls_to("ListTaskExecutions", "OK")
    assert processes_gone(source.pids)

    # flytekit's own view of both (a new client: FlyteRemote.sync_execution with the nodes).
    remote = FlyteRemote(
        Config.auto(config_file=str(admin.config_path)), admin.project, admin.domain
    )
    for name, status in ((source.name, "CACHE_POPULATED"), (seen.name, "CACHE_HIT")):
        execution = remote.sync_execution(remote.fetch_execution(name=name), sync_nodes=True)
        node = execution.node_executions[source.node_id]
        metadata = node.closure.task_node_metadata
        assert catalog_pb2.CatalogCacheStatus.Name(metadata.cache_status) == status
        key = metadata.catalog_key
        assert key.dataset_id.name == f"flyte_task-{source.task.id.name}"
        assert key.artifact_tag.name.startswith("flyte_cached-")
        assert key.source_task_execution.node_execution_id.execution_id.name == source.name
        assert len(node.task_executions) == (0 if status == "CACHE_HIT" else 1)
        assert execution.outputs.literals.keys() == source.outputs.literals.keys()


@pytest.mark.parametrize(
    "change",
    [{"n": 5}, {"values": range(1, 7)}],
    ids=["integer input", "DataFrame content"],
)
def test_a_changed_input_value_is_a_miss_and_a_real_run(shell, stand_in, primed, change):
    admin = stand_in
    _, first, _ = primed
    define_inputs(shell, **change)
    n = shell.user_ns["n"]
    expected = shell.user_ns["frame"].assign(value=shell.user_ns["frame"].value * n)
    value, handle = run(shell, admin, "--cache", "changed")
    assert_real_run(admin, handle, "CACHE_POPULATED")
    assert handle.cache_stored and "cache: miss, stored" in handle.summary_text()
    assert value == sum(i + 1 for i in range(n))
    pd.testing.assert_frame_equal(shell.user_ns["scaled"], expected)
    # the same task (nothing registered), but another key in the catalog
    assert handle.version == first.version and not admin.calls_to("CreateTask")
    assert execution_of(admin, handle).catalog_key != execution_of(admin, first).catalog_key


def test_another_cache_version_is_a_miss(shell, stand_in, primed):
    admin = stand_in
    first_value, first, _ = primed
    define_inputs(shell)
    value, handle = run(shell, admin, "--cache --cache-version v2", "versioned")
    assert_real_run(admin, handle, "CACHE_POPULATED")
    assert value == first_value
    seen = execution_of(admin, handle)
    template = seen.task.closure.compiled_task.template
    assert template.metadata.discoverable and template.metadata.discovery_version == "v2"
    assert seen.catalog_key.version.startswith("v2-")
    assert handle.version != first.version  # another template: another task version


def test_without_cache_an_equal_run_is_never_a_hit(shell, stand_in, primed):
    admin = stand_in
    first_value, first, _ = primed
    for out in ("plain", "plain_again"):
        define_inputs(shell)
        value, handle = run(shell, admin, "", out)
        assert_real_run(admin, handle, "CACHE_DISABLED")
        assert not handle.cache_stored and "cache: off" in handle.summary_text()
        assert value == first_value
        seen = execution_of(admin, handle)
        assert seen.catalog_key is None and seen.cache_entry is None
        assert not seen.task.closure.compiled_task.template.metadata.discoverable
    assert handle.version != first.version


def test_catalog_keys_count_hashed_literals_by_their_hash_only():
    """flytekit uploads inputs content-addressed, so the runs above reuse the same URIs; a
    hashed literal stored elsewhere (another upload, another kernel) must key the same."""
    from flyte_admin.catalog import catalog_key
    from flyteidl.core import identifier_pb2, interface_pb2, literals_pb2, tasks_pb2, types_pb2

    def blob(uri: str, digest: str) -> literals_pb2.Literal:
        return literals_pb2.Literal(
            scalar=literals_pb2.Scalar(blob=literals_pb2.Blob(uri=uri)), hash=digest
        )

    def integer(value: int) -> literals_pb2.Literal:
        return literals_pb2.Literal(
            scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value))
        )

    def key(n: int, uri: str, digest: str, version: str = "v1", outputs: str = "o0"):
        inputs = literals_pb2.LiteralMap(
            literals={
                "n": integer(n),
                "frames": literals_pb2.Literal(
                    collection=literals_pb2.LiteralCollection(literals=[blob(uri, digest)])
                ),
            }
        )
        variable = interface_pb2.Variable(
            type=types_pb2.LiteralType(simple=types_pb2.SimpleType.INTEGER)
        )
        template = tasks_pb2.TaskTemplate(
            metadata=tasks_pb2.TaskMetadata(discoverable=True, discovery_version=version),
            interface=interface_pb2.TypedInterface(
                inputs=interface_pb2.VariableMap(variables={"n": variable}),
                outputs=interface_pb2.VariableMap(variables={outputs: variable}),
            ),
        )
        task = identifier_pb2.Identifier(project="p", domain="d", name="t", version="x")
        return catalog_key(task, template, inputs)

    base = key(1, "s3://b/one", "h1")
    assert base.dataset == "flyte_task-t" and base.version.startswith("v1-")
    assert base.tag.startswith("flyte_cached-")
    assert key(1, "s3://b/elsewhere", "h1") == base  # stored elsewhere, same content hash
    assert key(1, "s3://b/one", "h2").tag != base.tag  # other content
    assert key(2, "s3://b/one", "h1").tag != base.tag  # another plain value
    assert key(1, "s3://b/one", "h1", version="v2").version != base.version
    assert key(1, "s3://b/one", "h1", outputs="o1").version != base.version  # interface
