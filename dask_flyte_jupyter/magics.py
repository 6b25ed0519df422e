"""The ``%%flyte_dask`` magic: parse the line, delegate to the pipeline, store the results."""

from __future__ import annotations

import keyword
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .backends.spare import IDLE_TIMEOUT
from .cell import CellError, analyse_cell
from .defaults import KernelDefaults
from .spec import ClusterSpec, SpecError, shown, spec_from_options

#: Options of the magic that map one to one onto ClusterSpec fields (flag -> argparse dest).
SPEC_FLAGS = {
    "workers": "workers",
    "worker-cpu": "worker_cpu",
    "worker-mem": "worker_mem",
    "worker-gpu": "worker_gpu",
    "scheduler-cpu": "scheduler_cpu",
    "scheduler-mem": "scheduler_mem",
    "image": "image",
    "interruptible": "interruptible",
    "cache": "cache",
    "cache-version": "cache_version",
    "name": "name",
    "pod-template": "pod_template",
    "accelerator": "accelerator",
}
#: Flags %flyte_dask_config sets (a default task name would make every cell the same task).
CONFIG_FLAGS = {flag: dest for flag, dest in SPEC_FLAGS.items() if flag != "name"}
#: Options that only mean something for a remote run (argparse dest -> flag).
REMOTE_ONLY = {
    "project": "--project",
    "domain": "--domain",
    "config": "--config",
    "timeout": "--timeout",
    "no_wait": "--no-wait",
}
#: The longest magic line (after the magic's name) that is read; a longer one is refused.
MAX_LINE_CHARS = 20_000
#: Options of the magic whose value is text the magic reads itself (argparse dest -> flag); an
#: empty value (``--project ''``) is refused. The spec's own flags are checked by the spec.
MAGIC_TEXT_FLAGS = {
    "inputs": "--inputs",
    "outputs": "--outputs",
    "out": "--out",
    "project": "--project",
    "domain": "--domain",
    "config": "--config",
    "timeout": "--timeout",
    "export": "--export",
    "execution": "EXECUTION_ID",
}


def _cluster_arguments(function: Any) -> Any:
    """The cluster-spec flags, shared by ``%%flyte_dask`` and ``%flyte_dask_config``."""
    flags = [
        argument("--workers", type=str, metavar="N", help="number of dask workers (>= 1)"),
        argument("--worker-cpu", metavar="Q", help="CPU limit per worker, e.g. 2 or 500m"),
        argument("--worker-mem", metavar="Q", help="memory limit per worker, e.g. 4Gi or 512Mi"),
        argument("--worker-gpu", type=str, metavar="N", help="GPUs per worker"),
        argument("--scheduler-cpu", metavar="Q", help="CPU request of the scheduler pod"),
        argument("--scheduler-mem", metavar="Q", help="memory request of the scheduler pod"),
        argument("--image", metavar="IMAGE", help="task image (job runner, scheduler, workers)"),
        argument(
            "--pod-template",
            metavar="NAME",
            help="the cluster's PodTemplate to build the pods from (flytekit pod_template_name)",
        ),
        argument(
            "--accelerator",
            metavar="GPU",
            help="GPU type for --worker-gpu, e.g. T4, A100:1g.5gb (flytekit accelerators)",
        ),
        argument(
            "--interruptible",
            action="store_true",
            default=None,
            help="run workers on spot/preemptible nodes",
        ),
        argument(
            "--cache",
            action="store_true",
            default=None,
            help="cache the whole task: an unchanged cell with equal inputs returns at once",
        ),
        argument(
            "--cache-version",
            metavar="V",
            help="cache version (default: a hash of the cell code and the cluster spec)",
        ),
    ]
    for decorate in reversed(flags):  # as if stacked above the function, first flag on top
        function = decorate(function)
    return function


@magics_class
class FlyteDaskMagics(Magics):
    """Magics of dask_flyte_jupyter. Kernel defaults and the run history live here."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        #: The kernel's defaults, observable: %flyte_dask_config and displayed pickers share it.
        self.kernel_defaults = KernelDefaults()
        self.runs: list[Any] = []  # RunHandle, newest last
        #: Clients and clusters of earlier cells, which ended with them: name -> (kind, cell).
        self.ended_handles: dict[str, tuple[str, str]] = {}

    @property
    def defaults(self) -> ClusterSpec:
        """Defaults for the next cell; flags on the cell override them."""
        return self.kernel_defaults.spec  # type: ignore[no-any-return]

    @defaults.setter
    def defaults(self, spec: ClusterSpec) -> None:
        self.kernel_defaults.spec = spec  # validated; a displayed picker follows

    @property
    def namespace(self) -> dict[str, Any]:
        assert self.shell is not None
        return self.shell.user_ns  # type: ignore[no-any-return]

    @magic_arguments()
    @_cluster_arguments
    @argument("--name", metavar="NAME", help="task name (default: derived from the cell text)")
    @argument("--inputs", metavar="a,b", help="use these notebook names as inputs")
    @argument("--outputs", metavar="x,y", help="write only these names back to the notebook")
    @argument("--out", metavar="VAR", help="store the run handle in VAR")
    @argument(
        "--no-progress",
        action="store_true",
        help="no live progress view (the summary is still shown)",
    )
    @argument(
        "--remote",
        action="store_true",
        help="run remote: on your Flyte cluster (its dask plugin starts it from the task image)",
    )
    @argument("--project", help="Flyte project (with --remote; default: the Flyte config's)")
    @argument("--domain", help="Flyte domain (with --remote; default: the Flyte config's)")
    @argument(
        "--config",
        metavar="PATH",
        help="flytectl config file (with --remote; default: $FLYTECTL_CONFIG, ~/.flyte/...)",
    )
    @argument(
        "--timeout",
        metavar="SECONDS",
        help="with --remote: terminate the execution when it runs longer than this",
    )
    @argument(
        "--no-wait",
        action="store_true",
        help="with --remote: return the run handle at once; handle.wait() follows the run",
    )
    @argument(
        "--dry-run",
        action="store_true",
        help="show the Flyte task --remote registers and its DaskJob (with --remote: on that "
        "deployment, its resource limits read); run nothing",
    )
    @argument(
        "--export",
        metavar="PATH",
        help="write the cell as a standalone flytekit module; run nothing",
    )
    @argument(
        "--force",
        action="store_true",
        help="with --export: overwrite PATH even if dask_flyte_jupyter did not write it",
    )
    @no_var_expand  # expanded by _expand: IPython's expansion is slow on a long line
    @cell_magic
    def flyte_dask(self, line: str, cell: str) -> Any:
        """Run this cell as a Flyte dask task on its own dedicated dask cluster.

        The cell's free names that exist in the notebook become the task's inputs (modules are
        re-imported, functions and classes travel by value); what it binds (assigned names,
        imports, functions, classes) is written back into the notebook when the run succeeds;
        its last expression is the cell's result (a trailing ``;`` hides it).
        While the cell runs, its own cluster is its dask: ``.compute()``, ``dask.compute``,
        ``get_client()`` and ``Client()`` reach it; a notebook ``client`` named in the cell
        stands for the cell's own. The cluster is started for the run and torn down when the
        cell ends; futures and persisted collections come back with their data, and a later
        ``%%flyte_dask`` cell gets them on its own cluster. ``%time`` / ``%timeit`` lines and a
        ``%%time`` first line work as in a notebook.

        Example::

            %%flyte_dask --workers 4 --worker-cpu 2 --worker-mem 4Gi
            from distributed import Client
            client = Client()
            result = client.gather(client.map(inc, range(n)))
            sum(result)

        Quantities use Kubernetes syntax (2, 500m, 1.5 for CPU; 512Mi, 4Gi, 1G for memory).
        Locally the cluster is scaled down to fit the machine, with a note saying so.
        With --remote the cell runs on a Flyte cluster (flytekit's config lookup, or --config):
        registered once per version, its dask cluster started from the task image (--image, or
        an ImageSpec of this kernel's environment), its outputs brought back the same way.
        The platform's resource defaults and limits (Flyte Admin's TASK_RESOURCE attributes, or
        the file named by $FLYTE_DASK_PLATFORM) give the shape the cluster really gets; it is
        shown before the run, and --dry-run shows the task exactly as --remote registers it.
        Error line numbers count the %%flyte_dask line as line 1, as JupyterLab shows them.
        The line is read as a shell reads it: quotes group words and are removed (--name
        'my-task', --config "~/flyte configs/config.yaml"), a backslash escapes; $name and
        {expression} take values from the notebook, as in other magics.
        """
        args = _parse(self.flyte_dask, self._expand(line))
        _refuse_empty(args, MAGIC_TEXT_FLAGS)
        if args.export is not None and args.dry_run:
            raise UsageError("--dry-run and --export: give one of them (both run nothing)")
        if args.force and args.export is None:
            raise UsageError("--force needs --export (it allows overwriting PATH)")
        out_var = _identifier_or_none(args.out, "--out")
        remote = bool(args.remote or self.kernel_defaults.remote)
        if not remote:
            for dest, flag in REMOTE_ONLY.items():
                if getattr(args, dest):
                    raise UsageError(f"{flag} needs --remote")
        _seconds(args.timeout)
        try:
            spec = spec_from_options(
                {flag: getattr(args, dest) for flag, dest in SPEC_FLAGS.items()},
                base=self.defaults,
            )
            from .notebook_syntax import translate_cell  # on the first cell, not at %load_ext

            translated = translate_cell(cell)
            program = analyse_cell(
                translated.source,
                self.namespace,
                quiet=translated.quiet,
                cell_timer=translated.cell_timer,
                inputs=_name_list(args.inputs, "--inputs"),
                outputs=_name_list(args.outputs, "--outputs"),
                ended=self.ended_handles,
            )
        except (SpecError, CellError) as error:
            raise UsageError(str(error)) from None

        if args.export is not None:
            if translated.source != cell.replace("\r\n", "\n").replace("\r", "\n"):
                raise UsageError("--export: remove the %time / %timeit lines first")
            return _export(program, spec, self.namespace, args.export, force=args.force)
        if args.dry_run:
            from .dryrun import show_dry_run  # imports flytekit: only when asked

            # with --remote: the project/domain and platform values of that Flyte deployment
            connection = self._connection(args) if remote else None
            return show_dry_run(self, program, spec, out_var, connection)

        from .kernel_status import stays_busy

        with stays_busy(self.shell):
            return self._run(program, spec, out_var, args, remote)

    def _run(
        self, program: Any, spec: ClusterSpec, out_var: str | None, args: Any, remote: bool
    ) -> Any:
        """Shows the run's view first (importing flytekit and building the task take seconds),
        then runs the cell."""
        from .display import discard_view, first_view, progress_mode
        from .run import start_run
        from .task import default_task_name

        name = spec.name or default_task_name(program.body)
        handle = start_run(name, spec, "flyte" if remote else "local", self.runs)
        view = first_view(handle, progress_mode(self.shell) if not args.no_progress else "none")
        try:
            from .execute import execute_cell  # imports flytekit: only when a cell runs

            backend = self._remote_backend(args) if remote else None
        except BaseException:
            discard_view(view)
            raise
        return execute_cell(
            self,
            program,
            spec,
            out_var,
            progress=not args.no_progress,
            backend=backend,
            handle=handle,
            view=view,
        )

    def _expand(self, line: str) -> str:
        """The line with IPython's ``$name`` / ``{expression}`` expansion from the notebook, as
        for any magic. IPython's own expansion takes minutes on a line of 100,000 characters
        (a quadratic regular expression) before a magic sees it: it is done here, only for a
        line that has a ``$`` or a brace and is short enough to be read at all."""
        if len(line) > MAX_LINE_CHARS or not any(char in line for char in "${}"):
            return line
        from IPython.utils.text import DollarFormatter

        try:
            return DollarFormatter().vformat(line, args=[], kwargs=dict(self.namespace))
        except Exception:  # as IPython does: a line it cannot expand is used as it is
            return line

    def _connection(self, args: Any) -> Any:
        """Where a remote run goes: ``--config`` / ``--project`` / ``--domain``, else the kernel
        defaults, else the Flyte config's."""
        from .backends.flyte import Connection

        try:
            return Connection(
                config=args.config,
                project=args.project or self.kernel_defaults.project or None,
                domain=args.domain or self.kernel_defaults.domain or None,
            )
        except ValueError as error:
            raise UsageError(str(error)) from None

    def _remote_backend(self, args: Any) -> Any:
        """The Flyte backend for ``--remote`` (or remote kernel defaults)."""
        from .backends.flyte import FlyteBackend

        connection = self._connection(args)
        return FlyteBackend(connection, timeout=_seconds(args.timeout), wait=not args.no_wait)

    @magic_arguments()
    @argument("--config", metavar="PATH", help="flytectl config file (default: flytekit's lookup)")
    @argument("--project", help="Flyte project (default: the Flyte config's)")
    @argument("--domain", help="Flyte domain (default: the Flyte config's)")
    @argument("--timeout", metavar="SECONDS", help="terminate the execution after this long")
    @argument("--out", metavar="VAR", help="store the run handle in VAR")
    @argument("--no-progress", action="store_true", help="no live progress view")
    @argument("execution", metavar="EXECUTION_ID", help="NAME, PROJECT/DOMAIN/NAME or console URL")
    @no_var_expand
    @line_magic
    def flyte_dask_attach(self, line: str) -> Any:
        """Follow a remote execution started earlier (``--no-wait``, or before a kernel restart)
        and bring its outputs into the notebook, as if the cell had waited for it.

        Example::

            %flyte_dask_attach fd0123456789abcdef01 --config ~/.flyte/config.yaml
        """
        args = _parse(self.flyte_dask_attach, self._expand(line))
        _refuse_empty(args, MAGIC_TEXT_FLAGS)
        out_var = _identifier_or_none(args.out, "--out")
        from .backends.flyte import attach_execution  # imports flytekit

        return attach_execution(
            self,
            args.execution,
            self._connection(args),
            out_var,
            progress=not args.no_progress,
            timeout=_seconds(args.timeout),
        )

    @magic_arguments()
    @_cluster_arguments
    @argument(
        "--spare-cluster",
        choices=["on", "off"],
        metavar="on/off",
        help="after a local run, start one spare cluster of its shape in the background for the "
        "next cell of that shape, which then starts at once (default: off); it is shut down after "
        "--spare-idle seconds unused, at kernel exit, at %%unload_ext and on an interrupt",
    )
    @argument(
        "--spare-idle",
        metavar="SECONDS",
        help=f"shut a spare cluster down when unused this long (default: {IDLE_TIMEOUT:g})",
    )
    @argument("--show", action="store_true", help="print the defaults as a %%%%flyte_dask line")
    @argument("--reset", action="store_true", help="back to the built-in defaults")
    @no_var_expand
    @line_magic
    def flyte_dask_config(self, line: str) -> Any:
        """Set this kernel's defaults for %%flyte_dask cells (flags on a cell still override them).

        With no options, shows the resource picker bound to the defaults: changing it changes
        what the next cell gets, and `%flyte_dask_config --workers 3` updates a shown picker.

        A spare cluster: after a local run that started a cluster, one more of the same shape
        is started in the background and handed to the next cell of that shape, so that it
        starts at once; each cell still gets a fresh cluster nothing else used. The spare shows
        in `%flyte_dask_runs` and the sidebar; it is shut down after --spare-idle seconds
        unused (10 minutes unless set), at kernel exit, at `%unload_ext dask_flyte_jupyter`,
        on an interrupt and when the next cell wants another shape. `--spare-cluster off` turns
        it off (the environment variable FLYTE_DASK_SPARE_CLUSTER=off makes off a kernel's
        default).
        """
        args = _parse(self.flyte_dask_config, self._expand(line))
        given = {
            f: getattr(args, d) for f, d in CONFIG_FLAGS.items() if getattr(args, d) is not None
        }
        idle = _seconds(args.spare_idle, "--spare-idle")
        spare = args.spare_cluster is not None or idle is not None
        if args.reset:
            self.kernel_defaults.spec = ClusterSpec()
            self.kernel_defaults.remote = False
            self.kernel_defaults.project = self.kernel_defaults.domain = ""
            self.kernel_defaults.reset_spare()
        if given:
            try:
                self.defaults = spec_from_options(given, base=self.defaults)
            except SpecError as error:
                raise UsageError(str(error)) from None
        if idle is not None:
            self.kernel_defaults.spare_idle = idle
        if args.spare_cluster is not None:
            self.kernel_defaults.spare_cluster = args.spare_cluster == "on"
        if args.show:
            print(self.kernel_defaults.magic_line())
            if spare_line := self.kernel_defaults.spare_line():
                print(spare_line)
        if given or spare or args.reset or args.show:
            return None
        from .picker import ResourcePicker, bind_picker

        picker = ResourcePicker()
        bind_picker(picker, self.kernel_defaults)
        return picker

    @line_magic
    def flyte_dask_clear_cache(self, line: str) -> None:
        """Empty flytekit's local cache, so every --cache cell runs again once.

        The local cache lives on disk (flytekit's ``~/.flyte/local-cache``) and outlives the
        kernel; this is how a notebook that demonstrates caching starts from a known state.
        """
        if line.strip():
            raise UsageError("%flyte_dask_clear_cache takes no options")
        from .execute import prepare_flytekit

        prepare_flytekit(self.shell)
        from flytekit.core.local_cache import LocalTaskCache

        LocalTaskCache.clear()
        print("flyte_dask: the local cache is empty")

    @line_magic
    def flyte_dask_runs(self, line: str) -> Any:
        """Show this kernel's %%flyte_dask runs, newest first: run number, name, status, start,
        duration, shape, cache, outputs, error and links; and the spare cluster waiting for
        the next cell, if there is one (see %flyte_dask_config --spare-cluster)."""
        from .backends.spare import spare_clusters
        from .display import RunTable

        if line.strip():
            raise UsageError("%flyte_dask_runs takes no options")
        return RunTable(self.runs, spare=spare_clusters().describe())

    def follow_spare_settings(self) -> None:
        """The process's spare cluster (``backends/spare.py``) follows these kernel defaults
        from now on (called when the extension is loaded)."""
        self.kernel_defaults.observe(self._apply_spare_settings, ["spare_cluster", "spare_idle"])
        self._apply_spare_settings()

    def _apply_spare_settings(self, _change: Any = None) -> None:
        from .backends.spare import spare_clusters

        defaults = self.kernel_defaults
        spare_clusters().configure(defaults.spare_cluster, defaults.spare_idle)


def split_magic_line(line: str) -> list[str]:
    """The words of a magic line, split as a POSIX shell does (``shlex.split``): quotes group
    and are removed (``--name 'a b'`` is one value, ``--image ''`` an empty one), a backslash
    escapes the next character. An unclosed quote is a usage error like any other bad flag, and
    so is a line too long to be typed (refused at once: splitting takes quadratic time)."""
    length = len(line.strip())
    if length > MAX_LINE_CHARS:
        raise UsageError(
            f"the magic line is {length} characters long (at most {MAX_LINE_CHARS}): is "
            "a value pasted by mistake?"
        )
    try:
        return shlex.split(line)
    except ValueError as error:  # "No closing quotation", "No escaped character"
        raise UsageError(str(error)) from None


def _parse(magic: Any, line: str) -> Any:
    """The magic's arguments, from the line split the way a shell user expects.

    IPython's ``parse_argstring`` splits in shlex's non-POSIX mode, which keeps the quotes in
    the values (``--export 'a.py'`` would name a file ``'a.py'``): the line is split here and
    the words are given to the magic's own argparse parser (errors become ``UsageError``).
    """
    return magic.parser.parse_args(split_magic_line(line))


def _export(
    program: Any, spec: ClusterSpec, namespace: dict[str, Any], path: str, force: bool
) -> None:
    from .export import ExportError, export_cell, preview  # imports flytekit: only when asked

    try:
        written = export_cell(program, spec, namespace, path, force=force)
    except ExportError as error:
        raise UsageError(str(error)) from None
    absolute = written.resolve()
    command = shlex.quote(str(absolute))  # a command the user can paste into a shell
    lines = preview(written.read_text(encoding="utf-8"))
    print(
        f"flyte_dask: exported the cell to {written} ({absolute}); run it: python {command}\n"
        + "\n".join(f"    {line}".rstrip() for line in lines)
    )


def parse_magic_line(line: str) -> dict[str, object]:
    """The options given on a ``%%flyte_dask`` line, by flag name (defaults left out).

    This is the reference parser: the JupyterLab sidebar's parser is checked against it with the
    shared vectors in ``tests/magic_line_vectors.json``. Raises ``UsageError`` like the magic.
    """
    text = line.strip()
    if text.startswith("%%flyte_dask"):
        text = text[len("%%flyte_dask") :]
    args = _parse(FlyteDaskMagics.flyte_dask, text)
    return {
        dest.replace("_", "-"): value
        for dest, value in vars(args).items()
        if value is not None and value is not False
    }


def _refuse_empty(args: Any, flags: dict[str, str]) -> None:
    """A value that is empty once its quotes are removed (``--project ''``) is a usage error."""
    for dest, flag in flags.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{flag}: must not be empty, got {shown(value)}")


def _seconds(text: str | None, flag: str = "--timeout") -> float | None:
    """``--timeout``, ``--spare-idle``: a number of seconds > 0."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"{flag}: must be a number of seconds > 0, got {shown(text)}")
    return seconds


def _name_list(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        _identifier_or_none(name, flag)
    return names


def _identifier_or_none(name: str | None, flag: str) -> str | None:
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"{flag}: {shown(name)} is not a valid Python name")
    return name
