"""The shape of worker/, held by a test: imports go down the layers, never round in a cycle, and
no module grows past what one reading holds.

The layers are the table below (docs/architecture.md explains them). Every module under worker/
is parsed with ``ast``, and every import counts wherever it stands: at the top, inside a
function (a lazy import is still a dependency), or under ``TYPE_CHECKING``. A module may import
its own layer and the layers below; a failure names the importing module, the line and the
imported module with both layers. Moving a module to another layer is a decision: change the
table and the page together.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "worker"
MAX_LINES = 400

# Lowest first. An entry names a module, or a package and everything in it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "bottom (pure: vendor tables, settings, errors, results, parameters, signing)",
        (
            "worker.vendor",
            "worker.settings",
            "worker.errors",
            "worker.results",
            "worker.params",
            "worker.urls",
            "worker.identity",  # pure: which image a reference is (pay once per image)
            "worker.policy",  # pure: a policy parsed and validated, an answer decided
            "worker.policy_text",  # pure: the policy's TOML and the line of each key
            "worker.prices",  # pure: prices per 1,000 calls, the daily budget setting
            "worker.signing",
            "worker.logs",
            "worker.settings_ui",  # the review page's settings, parsed for settings.py
            "worker.settings_act",  # imgmod act/restore's settings, parsed for settings.py
            "worker.settings_batch",  # item ids per message, parsed for settings.py
            "worker.readahead",  # an iterator's next items made in a thread (producers)
        ),
    ),
    ("store", ("worker.store",)),
    (
        "sources, queue and services",
        (
            "worker.sources",
            "worker.queue",
            "worker.window",
            "worker.orphans",  # queued rows whose message is gone, found and published again
            "worker.duty",  # one process of the fleet refills the window and looks for orphans
            "worker.new_rows",  # input records as rows and COPY text, a batch at a time
            "worker.producer",
            "worker.requeue",  # lost or failed rows back to pending, then a top-up
            "worker.oss",  # the OSS SDK client and one listing page
            "worker.oss_actions",  # imgmod act/restore: one ACL, copy or delete request
            "worker.webhook",  # signed webhook events, delivered with retries
            "worker.late_calls",  # calls that left late, for the limiter's 403 script
            "worker.limits",
            "worker.limits_local",  # the in-process limiter of a fleet of one (the demo)
            "worker.limits_lua",
            "worker.limits_margin",  # the share of the cap the limiter's permits aim at
            "worker.permits",  # a permit granted, or booked and not yet due
            "worker.permit_queue",  # a process's threads booked for together, one at a turn
            "worker.budget",  # a unit reserved in Redis before each call; the SQL ledger
            "worker.budget_lua",
            "worker.client",
            "worker.upload_token",  # DescribeUploadToken through the client
            "worker.uploads",  # local files: checked, uploaded with a cached token
            "worker.deadline",  # the client's wall-clock watchdog
            "worker.retry",
            # The task counts every call into it, so it sits below the task (its scrape-time
            # gauges read the store, which is below it too).
            "worker.metrics",
        ),
    ),
    (
        "the worker process (Celery glue)",
        (
            "worker",  # the package root: ``celery -A worker`` finds the app through it
            "worker.runtime",
            "worker.tasks",
            "worker.attempt",  # one claimed row's attempt: permit, parked answer or call
            "worker.durable",  # the task's billed answer: parked, then stored
            "worker.app",
            "worker.broker",  # kombu's Redis transport, one client per channel
            "worker.heartbeat",
        ),
    ),
    (
        "following, reporting and running things",
        (
            "worker.watch",
            "worker.reports",
            "worker.export_services",  # a job of several services: a line per reference
            "worker.report_data",  # the report's chart figures, shared with the review page
            "worker.report_html",  # imgmod report --html: one self-contained page (Jinja2)
            "worker.decide",  # imgmod decide: a policy over a job's stored answers, no call
            "worker.history",  # imgmod history: one image's story from SQL
            "worker.dryrun",  # what a run would read, bill and cost, writing nothing
            "worker.costs",  # billed calls and spend from the ledger
            "worker.doctor",
            "worker.doctor_oss",  # doctor --oss: one listing page, the service-read note
            "worker.actions",  # act/restore: the plan (pure) and the paced run
            "worker.processes",
            "worker.supervise",  # `imgmod worker`: one Celery worker process per core
            "worker.demo",
        ),
    ),
    (
        "command line and the review page",
        ("worker.cli", "worker.ui"),  # ui: the web face of the same functions the CLI calls
    ),
)

# The emulator stands apart: it shares only the signature with imgmod (so that a bug in
# worker/signing.py can't hide behind a matching bug), and only what starts processes (or the
# command line) may start it.
EMULATOR = "worker.emulator"
EMULATOR_MAY_IMPORT = ("worker.emulator", "worker.signing")
EMULATOR_USERS_FROM = "following, reporting and running things"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_within(module: str, entry: str) -> bool:
    return module == entry or module.startswith(entry + ".")


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


MODULES = _modules()
LAYER_NAMES = [name for name, _ in LAYERS]


def layer_of(module: str) -> int | None:
    """The index of the module's layer in :data:`LAYERS`, None when no entry places it. The
    root entry ``worker`` is its ``__init__`` alone, not the whole package."""
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if module == entry or (entry != "worker" and _is_within(module, entry)):
                return index
    return None


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def where(self) -> str:
        return f"{MODULES[self.importer].relative_to(ROOT)}:{self.line}"


def _resolve(name: str, known: Collection[str]) -> str:
    """The longest known module ``name`` starts with (``worker.store.items.claim_item`` ->
    ``worker.store.items``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def _imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return _imports_in(module, tree, is_package=path.name == "__init__.py", known=MODULES)


def _imports_in(
    module: str, tree: ast.AST, *, is_package: bool, known: Collection[str]
) -> Iterator[Import]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):  # every depth: functions, TYPE_CHECKING blocks, classes
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    yield Import(module, target, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if not _is_within(base, "worker"):
                continue
            for alias in node.names:
                # ``from worker import store``: the submodule, not the package's __init__
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in known else _resolve(base, known)
                if target:
                    yield Import(module, target, node.lineno)


IMPORTS = sorted(
    {imp for module in MODULES for imp in _imports_of(module) if imp.imported != module},
    key=lambda imp: (imp.importer, imp.line, imp.imported),
)


def _describe(module: str) -> str:
    layer = layer_of(module)
    return f"{module} ({'no layer' if layer is None else LAYER_NAMES[layer]})"


def test_every_module_under_worker_has_a_layer():
    """A module the table does not place is one nobody decided about: a leftover of a move
    (a compatibility shim) or a new module that needs a line in LAYERS and the page."""
    homeless = [m for m in MODULES if layer_of(m) is None and not _is_within(m, EMULATOR)]
    assert not homeless, f"modules with no layer in {Path(__file__).name}: {homeless}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for imp in IMPORTS:
        if _is_within(imp.importer, EMULATOR) or _is_within(imp.imported, EMULATOR):
            continue
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if low is not None and high is not None and high > low:
            upward.append(
                f"{imp.where()}: {_describe(imp.importer)} imports {_describe(imp.imported)}"
            )
    assert not upward, "imports against the direction of the layers:\n" + "\n".join(upward)


def test_the_emulator_imports_only_itself_and_signing():
    wrong = [
        f"{imp.where()}: {imp.importer} imports {imp.imported}"
        for imp in IMPORTS
        if _is_within(imp.importer, EMULATOR)
        and not any(_is_within(imp.imported, ok) for ok in EMULATOR_MAY_IMPORT)
    ]
    assert not wrong, "the emulator must stand apart from imgmod:\n" + "\n".join(wrong)


def test_only_the_process_starters_and_the_command_line_import_the_emulator():
    lowest = LAYER_NAMES.index(EMULATOR_USERS_FROM)
    wrong = []
    for imp in IMPORTS:
        layer = layer_of(imp.importer)
        if _is_within(imp.importer, EMULATOR) or not _is_within(imp.imported, EMULATOR):
            continue
        if layer is not None and layer < lowest:
            wrong.append(f"{imp.where()}: {_describe(imp.importer)} imports {imp.imported}")
    assert not wrong, "the emulator is started, not used as a library:\n" + "\n".join(wrong)


# Settings are read from the environment once, in one place, and passed down; the modules that
# start child processes copy the environment for them. The emulator is a program of its own.
ENVIRONMENT_READERS = (
    "worker.settings",
    "worker.processes",
    "worker.supervise",
    "worker.demo",
    EMULATOR,
)


_ENVIRONMENT = ("environ", "environb", "getenv", "putenv")


def _touches_environment(node: ast.AST) -> bool:
    """``os.environ`` / ``os.getenv`` / ``os.putenv``, or one of them imported by name."""
    if isinstance(node, ast.Attribute):
        return (
            isinstance(node.value, ast.Name) and node.value.id == "os" and node.attr in _ENVIRONMENT
        )
    if isinstance(node, ast.ImportFrom):
        return node.module == "os" and any(alias.name in _ENVIRONMENT for alias in node.names)
    return False


def _environment_uses(module: str) -> list[int]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return sorted({node.lineno for node in ast.walk(tree) if _touches_environment(node)})


def test_only_settings_and_process_starters_touch_the_environment():
    touching = [
        f"{MODULES[module].relative_to(ROOT)}:{line}"
        for module in MODULES
        if not any(_is_within(module, ok) for ok in ENVIRONMENT_READERS)
        for line in _environment_uses(module)
    ]
    assert not touching, (
        "read settings once in worker/settings.py and pass them down; "
        f"the environment is used at: {touching}"
    )


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, each as one cycle
    through them (the shortest way back to its first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_one_cycle(component, edges) for component in components]


def _one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, set()) & members):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    return component  # unreachable for a strongly connected component


def test_the_cycle_finder_finds_a_cycle_and_nothing_else():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in IMPORTS:
        edges[imp.importer].add(imp.imported)
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_under_worker_exceeds_400_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in MODULES.values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_the_import_parser_sees_local_relative_and_submodule_imports():
    """The parser itself: a function-local import, ``from package import submodule``, a
    relative import and a dotted name all count, each as the module it reaches."""
    source = (
        "from . import lines\n"
        "from .records import Accepted\n"
        "from ..params import ImageRef\n"
        "import worker.sources.jsonl\n"
        "def later():\n"
        "    from worker.sources import kinds\n"
        "    from worker.sources.records import Rejected\n"
    )
    known = {
        "worker",
        "worker.params",
        "worker.sources",
        *(f"worker.sources.{name}" for name in ("jsonl", "kinds", "lines", "records", "txt")),
    }
    tree = ast.parse(source)
    found = [
        (imp.imported, imp.line)
        for imp in _imports_in("worker.sources.txt", tree, is_package=False, known=known)
    ]
    assert found == [
        ("worker.sources.lines", 1),
        ("worker.sources.records", 2),
        ("worker.params", 3),
        ("worker.sources.jsonl", 4),
        ("worker.sources.kinds", 6),
        ("worker.sources.records", 7),
    ]
