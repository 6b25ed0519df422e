"""A Flyte Admin stand-in for tests: a real gRPC server speaking flyteidl (TEST DOUBLE).

This is not Flyte and not a product feature.  It implements the part of Flyte Admin's
``AdminService`` and ``DataProxyService`` that flytekit's ``FlyteRemote`` uses to register a task,
upload its code, run it as a single-task execution, follow it and fetch its outputs — answering
NOT_FOUND / ALREADY_EXISTS / INVALID_ARGUMENT / FAILED_PRECONDITION where Flyte Admin does — and
hands executions to :class:`tests.flyte_admin.runner.ExecutionRunner`, which plays propeller and
the dask operator.  Every call is logged in :attr:`FlyteAdminStandIn.calls`.

A discoverable (cached) task is looked up in the stand-in's data catalog (``catalog.py``) first:
a hit succeeds at once with the cached outputs and starts no process.

Not emulated: authentication, workflows/launch-plan *executions* (they are stored, not run),
cache reservations (``cache_serializable``), retries of failed tasks, schedules, signals, named
entities, attributes other than project/domain ones (``set_task_resources``).  Any RPC not
implemented answers UNIMPLEMENTED and is logged like the others.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import logging
import secrets
import string
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from flyteidl.admin import (
    common_pb2,
    execution_pb2,
    launch_plan_pb2,
    matchable_resource_pb2,
    node_execution_pb2,
    project_domain_attributes_pb2,
    project_pb2,
    task_execution_pb2,
    task_pb2,
    version_pb2,
    workflow_pb2,
)
from flyteidl.core import catalog_pb2, compiler_pb2, identifier_pb2, literals_pb2
from flyteidl.core import execution_pb2 as core_execution_pb2
from flyteidl.service import admin_pb2_grpc, dataproxy_pb2, dataproxy_pb2_grpc
from google.protobuf import text_format
from google.protobuf.duration_pb2 import Duration

from .catalog import Catalog, CatalogEntry, NotCacheable, catalog_key
from .runner import ExecutionRunner
from .state import TERMINAL_PHASES, Call, Event, StandInExecution, timestamp
from .storage import ACCESS_KEY, REGION, SECRET_KEY, S3Store

# MatchingAttributes' oneof field -> MatchableResource value.
_MATCHABLE = {
    "task_resource_attributes": matchable_resource_pb2.TASK_RESOURCE,
    "cluster_resource_attributes": matchable_resource_pb2.CLUSTER_RESOURCE,
    "execution_queue_attributes": matchable_resource_pb2.EXECUTION_QUEUE,
    "execution_cluster_label": matchable_resource_pb2.EXECUTION_CLUSTER_LABEL,
    "quality_of_service": matchable_resource_pb2.QUALITY_OF_SERVICE_SPECIFICATION,
    "plugin_overrides": matchable_resource_pb2.PLUGIN_OVERRIDE,
    "workflow_execution_config": matchable_resource_pb2.WORKFLOW_EXECUTION_CONFIG,
    "cluster_assignment": matchable_resource_pb2.CLUSTER_ASSIGNMENT,
}
START_NODE = "start-node"
END_NODE = "end-node"
UPLOAD_PREFIX = "uploads"  # flyteadmin's dataproxy default storage prefix
MAX_EXPIRES_IN = 3600  # seconds, flyteadmin's default max for signed URLs
DEFAULT_PROJECT = "flytesnacks"
DOMAINS = ("development", "staging", "production")

_P = core_execution_pb2  # phases
_logger = logging.getLogger(__name__)


class _Reject(Exception):
    """An error answer: a gRPC status code and Admin-like message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _key_fields(request: Any) -> dict[str, Any]:
    """The request's identifying fields, flattened, for the call log."""
    out: dict[str, Any] = {}
    for desc, value in request.ListFields():
        name = desc.name
        if desc.is_repeated:
            continue
        if desc.message_type is not None:
            if desc.message_type.name in (
                "Identifier",
                "NamedEntityIdentifier",
                "WorkflowExecutionIdentifier",
            ):
                for sub, subvalue in value.ListFields():
                    if sub.name == "resource_type":
                        subvalue = identifier_pb2.ResourceType.Name(subvalue)
                    out[sub.name] = subvalue
            elif desc.message_type.name in ("NodeExecutionIdentifier",):
                out["node_id"] = value.node_id
                out["name"] = value.execution_id.name
            elif desc.message_type.name == "TaskExecutionIdentifier":
                out["task"] = value.task_id.name
                out["node_id"] = value.node_execution_id.node_id
                out["name"] = value.node_execution_id.execution_id.name
                out["retry_attempt"] = value.retry_attempt
            elif name == "spec" and request.DESCRIPTOR.name == "ExecutionCreateRequest":
                lp = value.launch_plan
                out["launch_plan"] = f"{lp.name}:{lp.version}"
            continue
        if isinstance(value, bytes):
            value = value.hex()
        if isinstance(value, str | int | bool | float):
            out[name] = value
    return out


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Log the call and turn :class:`_Reject` into a gRPC status."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: AdminStandInServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            fields = _key_fields(request)
        except Exception as exc:  # never let the log break an answer
            fields = {"unloggable": repr(exc)}
        start = time.perf_counter()

        def call(code: str) -> Call:
            return Call(name, fields, code, start, time.perf_counter() - start)

        try:
            response = method(self, request, context)
        except _Reject as reject:
            self._log(call(reject.code.name))
            context.abort(reject.code, reject.message)
        except Exception as exc:  # a bug in the stand-in: say so loudly, as INTERNAL
            _logger.exception("Flyte Admin stand-in: %s failed", name)
            self._log(call("INTERNAL"))
            context.abort(grpc.StatusCode.INTERNAL, f"stand-in error: {exc!r}")
        self._log(call("OK"))
        return response

    wrapper._standin_rpc = True  # type: ignore[attr-defined]
    return wrapper


def _diff(old: Any, new: Any, limit: int = 40) -> str:
    """A short unified diff of two messages in text format (to explain a refusal)."""
    lines = difflib.unified_diff(
        text_format.MessageToString(old).splitlines(),
        text_format.MessageToString(new).splitlines(),
        "registered",
        "requested",
        lineterm="",
    )
    return "\n".join(list(lines)[:limit])


def _random_name(length: int = 20) -> str:
    """Like Admin's generated execution names: a letter, then lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(length - 1)
    )


def node_id_for_task(task_name: str) -> str:
    """The node id Admin gives the only node of a single-task execution.

    Admin keeps letters, digits and '-' of the task name, and hashes names longer than 20 chars.
    """
    kept = "".join(c for c in task_name if c == "-" or c.isalnum())
    if len(kept) <= 20:
        return kept or "n0"
    return "f" + base64.b32encode(hashlib.sha256(kept.encode()).digest()).decode().lower()[:19]


def _paginate(items: list[Any], limit: int, token: str) -> tuple[list[Any], str]:
    start = int(token) if token else 0
    limit = limit or 100
    page = items[start : start + limit]
    nxt = start + limit
    return page, (str(nxt) if nxt < len(items) else "")


def _parse_filters(filters: str) -> list[tuple[str, str, str]]:
    """Admin filter strings: ``eq(version,abc)+ne(name,x)``; only eq / ne are understood."""
    out = []
    for part in filter(None, filters.split("+")):
        op, _, rest = part.partition("(")
        if not rest.endswith(")") or "," not in rest or op not in ("eq", "ne"):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter {part!r}")
        fld, _, value = rest[:-1].partition(",")
        out.append((op, fld.strip(), value.strip()))
    return out


def _matches(ident: identifier_pb2.Identifier, filters: list[tuple[str, str, str]]) -> bool:
    for op, fld, value in filters:
        if fld not in ("name", "version", "project", "domain"):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter field {fld!r}")
        if (getattr(ident, fld) == value) != (op == "eq"):
            return False
    return True


class AdminStandInServicer(
    admin_pb2_grpc.AdminServiceServicer, dataproxy_pb2_grpc.DataProxyServiceServicer
):
    """The RPC handlers. State lives here, guarded by one lock; the runner shares the lock."""

    def __init__(self, storage: S3Store, runner: ExecutionRunner) -> None:
        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self.projects: set[str] = {DEFAULT_PROJECT}
        self.tasks: dict[tuple[str, str, str, str], task_pb2.Task] = {}
        self.workflows: dict[tuple[str, str, str, str], workflow_pb2.Workflow] = {}
        self.launch_plans: dict[tuple[str, str, str, str], launch_plan_pb2.LaunchPlan] = {}
        self.executions: dict[tuple[str, str, str], StandInExecution] = {}
        self.max_inline_bytes = 2 * 1024 * 1024  # Admin's default remote-data max size
        self.catalog = Catalog()  # Flyte's data catalog: outputs of discoverable tasks
        #: Matchable attributes per (project, domain, MatchableResource): Admin's overrides.
        self.project_domain_attributes: dict[tuple[str, str, int], Any] = {}
        self._storage = storage
        self._runner = runner

    def _log(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    # -- helpers ------------------------------------------------------------------------------

    def _check_project(self, project: str, domain: str) -> None:
        if not project or not domain:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "project and domain are required")
        if project not in self.projects or domain not in DOMAINS:
            raise _Reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"failed to validate that project [{project}] and domain [{domain}] are registered",
            )

    @staticmethod
    def _ident_key(ident: identifier_pb2.Identifier) -> tuple[str, str, str, str]:
        missing = [f for f in ("project", "domain", "name", "version") if not getattr(ident, f)]
        if missing:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"missing {', '.join(missing)}")
        return (ident.project, ident.domain, ident.name, ident.version)

    def _execution(self, ident: identifier_pb2.WorkflowExecutionIdentifier) -> StandInExecution:
        key = (ident.project, ident.domain, ident.name)
        with self.lock:
            if key not in self.executions:
                raise _Reject(
                    grpc.StatusCode.NOT_FOUND,
                    f"missing entity of type execution with identifier {ident.project}/"
                    f"{ident.domain}/{ident.name}",
                )
            return self.executions[key]

    def _url_blob_and_full(
        self, uri: str | None, literal_map: literals_pb2.LiteralMap | None
    ) -> tuple[common_pb2.UrlBlob, literals_pb2.LiteralMap]:
        """Admin returns data inline when it is small, else only a URL (here the s3:// URL)."""
        if not uri or literal_map is None:
            return common_pb2.UrlBlob(), literals_pb2.LiteralMap()
        size = literal_map.ByteSize()
        full = literal_map if size <= self.max_inline_bytes else literals_pb2.LiteralMap()
        return common_pb2.UrlBlob(url=uri, bytes=size), full

    # -- version, projects, domains -----------------------------------------------------------

    @_rpc
    def GetVersion(self, request, context):
        return version_pb2.GetVersionResponse(
            control_plane_version=version_pb2.Version(
                Build="flyte-admin-standin", Version="v1.16.0-standin", BuildTime="0"
            )
        )

    @_rpc
    def GetDomains(self, request, context):
        return project_pb2.GetDomainsResponse(
            domains=[project_pb2.Domain(id=d, name=d) for d in DOMAINS]
        )

    def _project(self, name: str) -> project_pb2.Project:
        return project_pb2.Project(
            id=name,
            name=name,
            domains=[project_pb2.Domain(id=d, name=d) for d in DOMAINS],
            state=project_pb2.Project.ACTIVE,
        )

    @_rpc
    def ListProjects(self, request, context):
        with self.lock:
            return project_pb2.Projects(projects=[self._project(p) for p in sorted(self.projects)])

    @_rpc
    def GetProject(self, request, context):
        with self.lock:
            if request.id not in self.projects:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"project [{request.id}] not found")
        return self._project(request.id)

    @_rpc
    def UpdateProjectDomainAttributes(self, request, context):
        attributes = request.attributes
        self._check_project(attributes.project, attributes.domain)
        kind = attributes.matching_attributes.WhichOneof("target")
        if kind is None:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "matching_attributes: nothing set")
        resource = _MATCHABLE[kind]
        with self.lock:
            self.project_domain_attributes[(attributes.project, attributes.domain, resource)] = (
                project_domain_attributes_pb2.ProjectDomainAttributes()
            )
            self.project_domain_attributes[
                (attributes.project, attributes.domain, resource)
            ].CopyFrom(attributes)
        return project_domain_attributes_pb2.ProjectDomainAttributesUpdateResponse()

    @_rpc
    def GetProjectDomainAttributes(self, request, context):
        self._check_project(request.project, request.domain)
        with self.lock:
            found = self.project_domain_attributes.get(
                (request.project, request.domain, request.resource_type)
            )
        if found is None:  # Admin answers NOT_FOUND when nothing overrides its config
            raise _Reject(
                grpc.StatusCode.NOT_FOUND,
                f"Resource [{request.project}/{request.domain}] of type "
                f"[{request.resource_type}] not found",
            )
        return project_domain_attributes_pb2.ProjectDomainAttributesGetResponse(attributes=found)

    @_rpc
    def RegisterProject(self, request, context):
        with self.lock:
            if request.project.id in self.projects:
                raise _Reject(grpc.StatusCode.ALREADY_EXISTS, "project already exists")
            self.projects.add(request.project.id)
        return project_pb2.ProjectRegisterResponse()

    # -- tasks --------------------------------------------------------------------------------

    @_rpc
    def CreateTask(self, request, context):
        key = self._ident_key(request.id)
        self._check_project(request.id.project, request.id.domain)
        if request.id.resource_type != identifier_pb2.TASK:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "identifier is not a task identifier")
        template = request.spec.template
        if not template.type or not template.HasField("interface"):
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "task template is incomplete")
        if self._ident_key(template.id) != key:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "task template id differs from the id")
        with self.lock:
            if key in self.tasks:
                stored = self.tasks[key].closure.compiled_task.template
                if stored.SerializeToString(deterministic=True) == template.SerializeToString(
                    deterministic=True
                ):
                    raise _Reject(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"task with identical structure already exists: {'/'.join(key)}",
                    )
                raise _Reject(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"task with different structure already exists: {'/'.join(key)}\n"
                    + _diff(stored, template),
                )
            self.tasks[key] = task_pb2.Task(
                id=request.id,
                closure=task_pb2.TaskClosure(
                    compiled_task=compiler_pb2.CompiledTask(template=template),
                    created_at=timestamp(time.time()),
                ),
            )
        return task_pb2.TaskCreateResponse()

    @_rpc
    def GetTask(self, request, context):
        key = self._ident_key(request.id)
        with self.lock:
            if key not in self.tasks:
                raise _Reject(
                    grpc.StatusCode.NOT_FOUND,
                    f"missing entity of type TASK with identifier {'/'.join(key)}",
                )
            return self.tasks[key]

    def _list(self, store: dict, request: common_pb2.ResourceListRequest) -> tuple[list, str]:
        filters = _parse_filters(request.filters)
        ident = request.id
        with self.lock:
            items = [
                v
                for (p, d, n, _), v in store.items()
                if p == ident.project
                and d == ident.domain
                and (not ident.name or n == ident.name)
                and _matches(v.id, filters)
            ]
        ascending = request.sort_by.direction == common_pb2.Sort.ASCENDING
        items.sort(key=lambda v: v.closure.created_at.ToNanoseconds(), reverse=not ascending)
        return _paginate(items, request.limit, request.token)

    @_rpc
    def ListTasks(self, request, context):
        tasks, token = self._list(self.tasks, request)
        return task_pb2.TaskList(tasks=tasks, token=token)

    # -- workflows and launch plans (stored for registration; not executed) --------------------

    @_rpc
    def CreateWorkflow(self, request, context):
        key = self._ident_key(request.id)
        self._check_project(request.id.project, request.id.domain)
        with self.lock:
            if key in self.workflows:
                stored = self.workflows[key].closure.compiled_workflow.primary.template
                if stored.SerializeToString(deterministic=True) == (
                    request.spec.template.SerializeToString(deterministic=True)
                ):
                    raise _Reject(grpc.StatusCode.ALREADY_EXISTS, "workflow already exists")
                raise _Reject(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "workflow with different structure already exists",
                )
            self.workflows[key] = workflow_pb2.Workflow(
                id=request.id,
                closure=workflow_pb2.WorkflowClosure(
                    compiled_workflow=compiler_pb2.CompiledWorkflowClosure(
                        primary=compiler_pb2.CompiledWorkflow(template=request.spec.template),
                        tasks=[
                            t.closure.compiled_task
                            for k, t in self.tasks.items()
                            if k[:2] == key[:2]
                            and any(
                                n.task_node.reference_id == t.id
                                for n in request.spec.template.nodes
                            )
                        ],
                    ),
                    created_at=timestamp(time.time()),
                ),
            )
        return workflow_pb2.WorkflowCreateResponse()

    @_rpc
    def GetWorkflow(self, request, context):
        key = self._ident_key(request.id)
        with self.lock:
            if key not in self.workflows:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"workflow {'/'.join(key)} not found")
            return self.workflows[key]

    @_rpc
    def ListWorkflows(self, request, context):
        items, token = self._list(self.workflows, request)
        return workflow_pb2.WorkflowList(workflows=items, token=token)

    @_rpc
    def CreateLaunchPlan(self, request, context):
        key = self._ident_key(request.id)
        self._check_project(request.id.project, request.id.domain)
        with self.lock:
            if key in self.launch_plans:
                if self.launch_plans[key].spec == request.spec:
                    raise _Reject(grpc.StatusCode.ALREADY_EXISTS, "launch plan already exists")
                raise _Reject(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "launch plan with different structure already exists",
                )
            self.launch_plans[key] = launch_plan_pb2.LaunchPlan(
                id=request.id,
                spec=request.spec,
                closure=launch_plan_pb2.LaunchPlanClosure(
                    state=launch_plan_pb2.INACTIVE,
                    expected_inputs=request.spec.default_inputs,
                    created_at=timestamp(time.time()),
                    updated_at=timestamp(time.time()),
                ),
            )
        return launch_plan_pb2.LaunchPlanCreateResponse()

    @_rpc
    def GetLaunchPlan(self, request, context):
        key = self._ident_key(request.id)
        with self.lock:
            if key not in self.launch_plans:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"launch plan {'/'.join(key)} not found")
            return self.launch_plans[key]

    @_rpc
    def ListLaunchPlans(self, request, context):
        items, token = self._list(self.launch_plans, request)
        return launch_plan_pb2.LaunchPlanList(launch_plans=items, token=token)

    @_rpc
    def UpdateLaunchPlan(self, request, context):
        key = self._ident_key(request.id)
        with self.lock:
            if key not in self.launch_plans:
                raise _Reject(grpc.StatusCode.NOT_FOUND, f"launch plan {'/'.join(key)} not found")
            self.launch_plans[key].closure.state = request.state
        return launch_plan_pb2.LaunchPlanUpdateResponse()

    # -- executions ---------------------------------------------------------------------------

    @_rpc
    def CreateExecution(self, request, context):
        self._check_project(request.project, request.domain)
        lp = request.spec.launch_plan
        if lp.resource_type != identifier_pb2.TASK:
            raise _Reject(
                grpc.StatusCode.UNIMPLEMENTED,
                "the Flyte Admin stand-in runs single-task executions only",
            )
        task_key = self._ident_key(lp)
        name = request.name or _random_name()
        ident = identifier_pb2.WorkflowExecutionIdentifier(
            project=request.project, domain=request.domain, name=name
        )
        with self.lock:
            if task_key not in self.tasks:
                raise _Reject(
                    grpc.StatusCode.NOT_FOUND,
                    f"missing entity of type TASK with identifier {'/'.join(task_key)}",
                )
            if (request.project, request.domain, name) in self.executions:
                raise _Reject(grpc.StatusCode.ALREADY_EXISTS, f"execution {name} already exists")
            task = self.tasks[task_key]
        inputs = request.inputs if request.HasField("inputs") else request.spec.inputs
        expected = task.closure.compiled_task.template.interface.inputs.variables
        unknown = sorted(set(inputs.literals) - set(expected))
        missing = sorted(set(expected) - set(inputs.literals))
        if unknown or missing:
            raise _Reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid inputs: unknown {unknown}, missing {missing}",
            )
        node_id = node_id_for_task(lp.name)
        meta = f"metadata/propeller/{request.project}-{request.domain}-{name}"
        record = StandInExecution(
            id=ident,
            spec=request.spec,
            task=task,
            inputs=inputs,
            node_id=node_id,
            inputs_uri=self._storage.url(f"{meta}/inputs.pb"),
            node_inputs_uri=self._storage.url(f"{meta}/{node_id}/data/inputs.pb"),
            output_prefix=self._storage.url(f"{meta}/{node_id}/data/0"),
            raw_output_prefix=self._storage.url(f"data/{name[:2]}/{name}-{node_id}-0"),
        )
        record.events.append(Event(record.created_at, "QUEUED", "created"))
        data = inputs.SerializeToString()
        self._storage.put(self._storage.key(record.inputs_uri), data)
        self._storage.put(self._storage.key(record.node_inputs_uri), data)
        cached = self._look_up_cache(record)
        if cached is not None:
            self._answer_from_cache(record, cached)
        with self.lock:
            if (request.project, request.domain, name) in self.executions:
                raise _Reject(grpc.StatusCode.ALREADY_EXISTS, f"execution {name} already exists")
            self.executions[(request.project, request.domain, name)] = record
        if cached is None:
            self._runner.submit(record)
        return execution_pb2.ExecutionCreateResponse(id=ident)

    # -- the task cache (propeller + data catalog) ---------------------------------------------

    def _look_up_cache(self, ex: StandInExecution) -> CatalogEntry | None:
        """What propeller asks the catalog before it runs a discoverable task's node."""
        template = ex.task.closure.compiled_task.template
        try:
            ex.catalog_key = catalog_key(ex.task.id, template, ex.inputs)
        except NotCacheable as error:
            ex.cache_status = catalog_pb2.CACHE_LOOKUP_FAILURE
            ex.events.append(Event(time.time(), ex.phase_name, f"cache lookup failed: {error}"))
            return None
        if ex.catalog_key is None:
            return None  # CACHE_DISABLED
        ex.cache_status = catalog_pb2.CACHE_MISS  # until it succeeds: then CACHE_POPULATED
        if ex.spec.overwrite_cache:
            return None  # run it, then replace what the catalog holds
        self.settle_catalog()
        return self.catalog.get(ex.catalog_key)

    def _answer_from_cache(self, ex: StandInExecution, entry: CatalogEntry) -> None:
        """A cache hit: the node succeeds at once with the cached outputs, written to its own
        output location as propeller does; no task execution, no pod (no process) at all."""
        outputs_uri = f"{ex.output_prefix}/outputs.pb"
        self._storage.put(self._storage.key(outputs_uri), entry.outputs.SerializeToString())
        now = time.time()
        ex.cache_status = catalog_pb2.CACHE_HIT
        ex.cache_entry = entry
        ex.outputs, ex.outputs_uri = entry.outputs, outputs_uri
        ex.phase, ex.node_phase = _P.WorkflowExecution.SUCCEEDED, _P.NodeExecution.SUCCEEDED
        ex.started_at = ex.ended_at = ex.updated_at = now
        ex.events.append(
            Event(now, ex.phase_name, f"cache hit: outputs of execution {entry.source_execution}")
        )
        ex.done.set()

    def settle_catalog(self) -> None:
        """Stores the outputs of every discoverable execution that succeeded since the last call.

        Propeller writes the catalog before the node's success becomes visible; the runner only
        sets the phase, so this runs (under the lock) before anything reads the catalog or a
        cache status: the effect is the same."""
        with self.lock:
            for ex in self.executions.values():
                if (
                    ex.cache_status == catalog_pb2.CACHE_MISS
                    and ex.phase == _P.WorkflowExecution.SUCCEEDED
                    and ex.outputs is not None
                ):
                    ex.cache_entry = self.catalog.put(
                        ex.catalog_key,
                        ex.outputs,
                        self._task_execution_id(ex),
                        overwrite=bool(ex.spec.overwrite_cache),
                    )
                    ex.cache_status = catalog_pb2.CACHE_POPULATED

    def _execution_proto(self, ex: StandInExecution) -> execution_pb2.Execution:
        with self.lock:
            task_id = ex.task.id
            closure = execution_pb2.ExecutionClosure(
                phase=ex.phase,
                created_at=timestamp(ex.created_at),
                updated_at=timestamp(ex.updated_at),
                workflow_id=identifier_pb2.Identifier(
                    resource_type=identifier_pb2.WORKFLOW,
                    project=task_id.project,
                    domain=task_id.domain,
                    name=f".flytegen.{task_id.name}",
                    version=task_id.version,
                ),
            )
            if ex.started_at is not None:
                closure.started_at.CopyFrom(timestamp(ex.started_at))
                end = ex.ended_at if ex.ended_at is not None else time.time()
                closure.duration.FromNanoseconds(int((end - ex.started_at) * 1e9))
            if ex.phase == _P.WorkflowExecution.SUCCEEDED and ex.outputs_uri:
                closure.outputs.uri = ex.outputs_uri
            elif ex.error is not None and ex.phase == _P.WorkflowExecution.FAILED:
                closure.error.CopyFrom(ex.error)
            elif ex.abort_cause is not None:
                closure.abort_metadata.CopyFrom(
                    execution_pb2.AbortMetadata(cause=ex.abort_cause, principal="standin")
                )
            return execution_pb2.Execution(id=ex.id, spec=ex.spec, closure=closure)

    @_rpc
    def GetExecution(self, request, context):
        return self._execution_proto(self._execution(request.id))

    @_rpc
    def ListExecutions(self, request, context):
        filters = _parse_filters(request.filters)
        with self.lock:
            items = [
                ex
                for (p, d, _), ex in self.executions.items()
                if p == request.id.project and d == request.id.domain
            ]
        for op, fld, value in filters:
            if fld != "name":
                raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter {fld!r}")
            items = [ex for ex in items if (ex.name == value) == (op == "eq")]
        ascending = request.sort_by.direction == common_pb2.Sort.ASCENDING
        items.sort(key=lambda ex: ex.created_at, reverse=not ascending)
        page, token = _paginate(items, request.limit, request.token)
        return execution_pb2.ExecutionList(
            executions=[self._execution_proto(ex) for ex in page], token=token
        )

    @_rpc
    def GetExecutionData(self, request, context):
        ex = self._execution(request.id)
        with self.lock:
            inputs, full_inputs = self._url_blob_and_full(ex.inputs_uri, ex.inputs)
            outputs, full_outputs = self._url_blob_and_full(ex.outputs_uri, ex.outputs)
        return execution_pb2.WorkflowExecutionGetDataResponse(
            inputs=inputs, full_inputs=full_inputs, outputs=outputs, full_outputs=full_outputs
        )

    @_rpc
    def TerminateExecution(self, request, context):
        ex = self._execution(request.id)
        with self.lock:
            if ex.phase in TERMINAL_PHASES or ex.abort_cause is not None:
                raise _Reject(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"execution {ex.name} is already in a terminal state "
                    f"[{ex.phase_name}] or aborting",
                )
            ex.abort_cause = request.cause or "terminated"
            ex.phase = _P.WorkflowExecution.ABORTING
            ex.updated_at = time.time()
        self._runner.abort(ex)
        return execution_pb2.ExecutionTerminateResponse()

    # -- node and task executions -------------------------------------------------------------

    def _node_ids(self, ex: StandInExecution) -> list[str]:
        """Node executions exist once propeller has started the workflow."""
        if ex.started_at is None:
            return []
        nodes = [START_NODE, ex.node_id]
        if ex.phase == _P.WorkflowExecution.SUCCEEDED:
            nodes.append(END_NODE)
        return nodes

    def _node_proto(self, ex: StandInExecution, node_id: str) -> node_execution_pb2.NodeExecution:
        ident = identifier_pb2.NodeExecutionIdentifier(node_id=node_id, execution_id=ex.id)
        closure = node_execution_pb2.NodeExecutionClosure(
            created_at=timestamp(ex.started_at or ex.created_at),
            updated_at=timestamp(ex.updated_at),
        )
        if node_id == START_NODE:
            closure.phase = _P.NodeExecution.SUCCEEDED
            closure.output_uri = ex.inputs_uri
            input_uri = ""
        elif node_id == END_NODE:
            closure.phase = _P.NodeExecution.SUCCEEDED
            input_uri = ex.outputs_uri or ""
        else:
            closure.phase = ex.node_phase
            input_uri = ex.node_inputs_uri
            if ex.started_at is not None:
                closure.started_at.CopyFrom(timestamp(ex.started_at))
                end = ex.ended_at if ex.ended_at is not None else time.time()
                closure.duration.FromNanoseconds(int((end - ex.started_at) * 1e9))
            if ex.node_phase == _P.NodeExecution.SUCCEEDED and ex.outputs_uri:
                closure.output_uri = ex.outputs_uri
            elif ex.node_phase == _P.NodeExecution.FAILED and ex.error is not None:
                closure.error.CopyFrom(ex.error)
            self.settle_catalog()
            closure.task_node_metadata.cache_status = ex.cache_status
            if ex.cache_entry is not None:  # the result reused (hit) or stored (populated)
                closure.task_node_metadata.catalog_key.CopyFrom(ex.cache_entry.metadata())
        return node_execution_pb2.NodeExecution(
            id=ident,
            input_uri=input_uri,
            closure=closure,
            metadata=node_execution_pb2.NodeExecutionMetaData(spec_node_id=node_id),
        )

    def _node(self, ident: identifier_pb2.NodeExecutionIdentifier) -> StandInExecution:
        ex = self._execution(ident.execution_id)
        if ident.node_id not in self._node_ids(ex):
            raise _Reject(
                grpc.StatusCode.NOT_FOUND, f"node execution {ident.node_id} of {ex.name} not found"
            )
        return ex

    @_rpc
    def ListNodeExecutions(self, request, context):
        ex = self._execution(request.workflow_execution_id)
        with self.lock:
            node_ids = [] if request.unique_parent_id else self._node_ids(ex)
            nodes = [self._node_proto(ex, n) for n in node_ids]
        page, token = _paginate(nodes, request.limit, request.token)
        return node_execution_pb2.NodeExecutionList(node_executions=page, token=token)

    @_rpc
    def GetNodeExecution(self, request, context):
        ex = self._node(request.id)
        with self.lock:
            return self._node_proto(ex, request.id.node_id)

    @_rpc
    def GetNodeExecutionData(self, request, context):
        ex = self._node(request.id)
        node_id = request.id.node_id
        with self.lock:
            if node_id == START_NODE:
                ins, full_ins = common_pb2.UrlBlob(), literals_pb2.LiteralMap()
                outs, full_outs = self._url_blob_and_full(ex.inputs_uri, ex.inputs)
            elif node_id == END_NODE:
                ins, full_ins = self._url_blob_and_full(ex.outputs_uri, ex.outputs)
                outs, full_outs = common_pb2.UrlBlob(), literals_pb2.LiteralMap()
            else:
                ins, full_ins = self._url_blob_and_full(ex.node_inputs_uri, ex.inputs)
                outs, full_outs = self._url_blob_and_full(ex.outputs_uri, ex.outputs)
        return node_execution_pb2.NodeExecutionGetDataResponse(
            inputs=ins, full_inputs=full_ins, outputs=outs, full_outputs=full_outs
        )

    def _task_execution_proto(self, ex: StandInExecution) -> task_execution_pb2.TaskExecution:
        closure = task_execution_pb2.TaskExecutionClosure(
            phase=ex.task_phase,
            task_type=ex.task.closure.compiled_task.template.type,
            created_at=timestamp(ex.task_started_at or ex.created_at),
            updated_at=timestamp(ex.updated_at),
            reason=ex.events[-1].note if ex.events else "",
        )
        if ex.task_started_at is not None:
            closure.started_at.CopyFrom(timestamp(ex.task_started_at))
            end = ex.ended_at if ex.ended_at is not None else time.time()
            closure.duration.FromNanoseconds(int((end - ex.task_started_at) * 1e9))
        if ex.task_phase == _P.TaskExecution.SUCCEEDED and ex.outputs_uri:
            closure.output_uri = ex.outputs_uri
        elif ex.task_phase == _P.TaskExecution.FAILED and ex.error is not None:
            closure.error.CopyFrom(ex.error)
        return task_execution_pb2.TaskExecution(
            id=self._task_execution_id(ex), input_uri=ex.node_inputs_uri, closure=closure
        )

    @staticmethod
    def _task_execution_id(ex: StandInExecution) -> identifier_pb2.TaskExecutionIdentifier:
        return identifier_pb2.TaskExecutionIdentifier(
            task_id=ex.task.id,
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id=ex.node_id, execution_id=ex.id
            ),
            retry_attempt=0,
        )

    def _task_execution(self, ident: identifier_pb2.TaskExecutionIdentifier) -> StandInExecution:
        ex = self._execution(ident.node_execution_id.execution_id)
        with self.lock:
            if ex.task_phase == _P.TaskExecution.UNDEFINED or ident != self._task_execution_id(ex):
                raise _Reject(grpc.StatusCode.NOT_FOUND, "task execution not found")
        return ex

    @_rpc
    def ListTaskExecutions(self, request, context):
        ex = self._execution(request.node_execution_id.execution_id)
        with self.lock:
            items = (
                [self._task_execution_proto(ex)]
                if request.node_execution_id.node_id == ex.node_id
                and ex.task_phase != _P.TaskExecution.UNDEFINED
                else []
            )
        page, token = _paginate(items, request.limit, request.token)
        return task_execution_pb2.TaskExecutionList(task_executions=page, token=token)

    @_rpc
    def GetTaskExecution(self, request, context):
        ex = self._task_execution(request.id)
        with self.lock:
            return self._task_execution_proto(ex)

    @_rpc
    def GetTaskExecutionData(self, request, context):
        ex = self._task_execution(request.id)
        with self.lock:
            ins, full_ins = self._url_blob_and_full(ex.node_inputs_uri, ex.inputs)
            outs, full_outs = self._url_blob_and_full(ex.outputs_uri, ex.outputs)
        return task_execution_pb2.TaskExecutionGetDataResponse(
            inputs=ins, full_inputs=full_ins, outputs=outs, full_outputs=full_outs
        )

    # -- data proxy ---------------------------------------------------------------------------

    @staticmethod
    def _expires_in(duration: Duration) -> int:
        seconds = duration.seconds if duration.ByteSize() else MAX_EXPIRES_IN
        if seconds < 0 or seconds > MAX_EXPIRES_IN:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, f"expiresIn [{seconds}s] is invalid")
        return seconds

    @_rpc
    def CreateUploadLocation(self, request, context):
        if not request.project or not request.domain:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "project and domain are required")
        if not request.filename_root and not request.content_md5:
            raise _Reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                "content_md5 or filename_root is a required parameter",
            )
        expires_in = self._expires_in(request.expires_in)
        filename = request.filename or _random_name()
        prefix = request.filename_root or base64.b32encode(request.content_md5).decode()
        key = f"{UPLOAD_PREFIX}/{request.project}/{request.domain}/{prefix}/{filename}"
        if request.filename and request.filename_root:
            # A deterministic location: Admin refuses to overwrite it unless the hash matches.
            existing = self._storage.get(key)
            if existing is not None and (
                not request.content_md5
                or hashlib.md5(existing).digest() != bytes(request.content_md5)
            ):
                raise _Reject(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"file already exists at location [{self._storage.url(key)}], "
                    "specify a matching hash if you wish to rewrite",
                )
        signed, headers = self._storage.presign_put(key, request.content_md5, expires_in)
        return dataproxy_pb2.CreateUploadLocationResponse(
            signed_url=signed,
            native_url=self._storage.url(key),
            expires_at=timestamp(time.time() + expires_in),
            headers=headers,
        )

    @_rpc
    def CreateDownloadLocation(self, request, context):
        expires_in = self._expires_in(request.expires_in)
        try:
            key = self._storage.key(request.native_url)
        except ValueError as exc:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return dataproxy_pb2.CreateDownloadLocationResponse(
            signed_url=self._storage.presign_get(key, expires_in),
            expires_at=timestamp(time.time() + expires_in),
        )


def _unimplemented(name: str) -> Callable[..., Any]:
    def handler(self: AdminStandInServicer, request: Any, context: grpc.ServicerContext) -> Any:
        self._log(Call(name, _key_fields(request), "UNIMPLEMENTED"))
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not emulated by the stand-in")

    handler.__name__ = name
    return handler


# Every RPC the stand-in does not emulate still shows up in the call log.
for _base in (admin_pb2_grpc.AdminServiceServicer, dataproxy_pb2_grpc.DataProxyServiceServicer):
    for _name in [n for n in vars(_base) if n[:1].isupper()]:
        if not getattr(vars(AdminStandInServicer).get(_name), "_standin_rpc", False):
            setattr(AdminStandInServicer, _name, _unimplemented(_name))


class FlyteAdminStandIn:
    """A started Flyte Admin stand-in: gRPC server + moto S3 + runner (TEST DOUBLE).

    ``endpoint``: ``127.0.0.1:PORT`` of the gRPC server.
    ``config_path``: a flytectl-style YAML config, for ``Config.auto(config_file=...)`` and
    ``--config``.
    ``calls``: the call log (a copy), ``executions``: executions by name.
    ``fake_versions``: e.g. ``{"distributed": "2000.1.0"}`` makes the dask scheduler and workers of
    executions created afterwards report those package versions (see README.md).
    ``close()`` terminates running executions, kills their processes and stops everything.
    """

    def __init__(self, *, project: str = DEFAULT_PROJECT, max_workers: int = 16) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="flyte-admin-standin-")
        self.storage = S3Store()
        try:
            self.runner = ExecutionRunner(self)
            self.servicer = AdminStandInServicer(self.storage, self.runner)
            self.servicer.projects.add(project)
            self._server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="standin")
            )
            admin_pb2_grpc.add_AdminServiceServicer_to_server(self.servicer, self._server)
            dataproxy_pb2_grpc.add_DataProxyServiceServicer_to_server(self.servicer, self._server)
            port = self._server.add_insecure_port("127.0.0.1:0")
            self._server.start()
        except BaseException:
            self.storage.close()
            self._tmp.cleanup()
            raise
        self.endpoint = f"127.0.0.1:{port}"
        self.project = project
        self.domain = DOMAINS[0]
        self.fake_versions: dict[str, str] = {}
        #: Flyte Admin's own ``task_resources`` config (defaults, limits): applies to every
        #: project but, like Admin's, is not readable through the API.
        self.admin_task_resources: tuple[dict[str, str], dict[str, str]] | None = None
        #: flytepropeller's ``plugins.k8s`` config and the namespace's PodTemplates.
        self.k8s_plugin_config: dict[str, Any] = {}
        self.pod_templates: dict[str, dict[str, Any]] = {}
        self.config_path = Path(self._tmp.name) / "config.yaml"
        self.config_path.write_text(self._config_yaml())
        self._closed = False

    # -- configuration ------------------------------------------------------------------------

    def set_task_resources(
        self,
        defaults: dict[str, str],
        limits: dict[str, str],
        *,
        project: str | None = None,
        domain: str | None = None,
    ) -> None:
        """Project/domain ``TASK_RESOURCE`` attributes, as ``flytectl update
        task-resource-attribute`` sets them (readable with GetProjectDomainAttributes)."""
        spec = matchable_resource_pb2.TaskResourceSpec
        fields = {
            "cpu": "cpu",
            "memory": "memory",
            "gpu": "gpu",
            "ephemeral-storage": "ephemeral_storage",
        }
        attributes = project_domain_attributes_pb2.ProjectDomainAttributes(
            project=project or self.project,
            domain=domain or self.domain,
            matching_attributes=matchable_resource_pb2.MatchingAttributes(
                task_resource_attributes=matchable_resource_pb2.TaskResourceAttributes(
                    defaults=spec(**{fields[k]: v for k, v in defaults.items()}),
                    limits=spec(**{fields[k]: v for k, v in limits.items()}),
                )
            ),
        )
        key = (attributes.project, attributes.domain, matchable_resource_pb2.TASK_RESOURCE)
        with self.servicer.lock:
            self.servicer.project_domain_attributes[key] = attributes

    def platform_for(self, project: str, domain: str) -> Any:
        """The deployment's values propeller applies to a task of ``project``/``domain``: the
        TASK_RESOURCE attributes, else Admin's own config; the k8s plugin config; templates."""
        from dask_flyte_jupyter.platform import Platform, from_task_resource_attributes

        key = (project, domain, matchable_resource_pb2.TASK_RESOURCE)
        with self.servicer.lock:
            found = self.servicer.project_domain_attributes.get(key)
        if found is not None:
            attributes = found.matching_attributes.task_resource_attributes
            defaults, limits = from_task_resource_attributes(attributes)
            source = f"TASK_RESOURCE of {project}/{domain}"
        elif self.admin_task_resources is not None:
            defaults, limits = self.admin_task_resources
            source = "Flyte Admin's task_resources config"
        else:
            defaults, limits, source = {}, {}, "unknown"
        return Platform(
            defaults=dict(defaults),
            limits=dict(limits),
            resources_from=source,
            k8s=dict(self.k8s_plugin_config),
            k8s_from="the stand-in's propeller config",
            pod_templates=dict(self.pod_templates),
        )

    @property
    def platform(self) -> Any:
        """:meth:`platform_for` the stand-in's project and domain."""
        return self.platform_for(self.project, self.domain)

    def _config_yaml(self) -> str:
        return (
            "# Flyte Admin stand-in (TEST DOUBLE) — generated, do not edit\n"
            "admin:\n"
            f"  endpoint: dns:///{self.endpoint}\n"
            "  insecure: true\n"
            "storage:\n"
            "  type: minio\n"
            f"  container: {self.storage.bucket}\n"
            "  connection:\n"
            f"    endpoint: {self.storage.endpoint}\n"
            f"    access-key: {ACCESS_KEY}\n"
            f"    secret-key: {SECRET_KEY}\n"
            "    auth-type: accesskey\n"
            "    disable-ssl: true\n"
            f"    region: {REGION}\n"
        )

    @property
    def env(self) -> dict[str, str]:
        """The variables a Flyte pod would get to reach Admin and the blob store."""
        return {
            "FLYTE_PLATFORM_URL": self.endpoint,
            "FLYTE_PLATFORM_INSECURE": "True",
            "FLYTE_AWS_ENDPOINT": self.storage.endpoint,
            "FLYTE_AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "FLYTE_AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def bucket(self) -> str:
        return self.storage.bucket

    # -- observations -------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self.servicer.lock:
            return list(self.servicer.calls)

    def calls_to(self, method: str, code: str | None = None) -> list[Call]:
        """The logged calls of one RPC, optionally only those answered with ``code``."""
        return [c for c in self.calls if c.method == method and (code is None or c.code == code)]

    def clear_calls(self) -> None:
        with self.servicer.lock:
            self.servicer.calls.clear()

    @property
    def executions(self) -> dict[str, StandInExecution]:
        with self.servicer.lock:
            self.servicer.settle_catalog()
            return {ex.name: ex for ex in self.servicer.executions.values()}

    @property
    def catalog(self) -> Catalog:
        """The data catalog: cached outputs of discoverable tasks (``catalog.py``)."""
        self.servicer.settle_catalog()
        return self.servicer.catalog

    @property
    def max_inline_bytes(self) -> int:
        return self.servicer.max_inline_bytes

    @max_inline_bytes.setter
    def max_inline_bytes(self, value: int) -> None:
        self.servicer.max_inline_bytes = value

    @property
    def scratch_dir(self) -> Path:
        return Path(self._tmp.name)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.runner.close()
        finally:
            try:
                self._server.stop(grace=None).wait(5)
            finally:
                try:
                    self.storage.close()
                finally:
                    self._tmp.cleanup()

    def __enter__(self) -> FlyteAdminStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FlyteAdminStandIn {self.endpoint} s3={self.storage.endpoint}/{self.bucket}>"


__all__ = ["AdminStandInServicer", "FlyteAdminStandIn", "node_id_for_task"]
