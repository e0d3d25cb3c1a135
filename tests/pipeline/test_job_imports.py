"""No job imports another job, directly or through the modules it imports: what two jobs share lives in a module
named for what it is (checkpoint, describe_output, describer, rescore, ...), so each job can change alone."""

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "stages", "cache", "pipeline", "ui", "data")
# The `vtm` subcommands' library functions. evaluation.py is not one: it is the event-matching metric that
# calibrate, the learned metrics and the benchmarks share (`vtm evaluate` is cli.py over learned_metrics.py).
JOBS = ("extract", "describe", "train", "infer", "triggers", "calibrate", "export")
# (importer, imported) -> the only names it may take. describe takes failure_reason from extract until the
# executor (issue 12) gives it a home of its own in pipeline/executor.py: then delete this entry.
ALLOWED: dict[tuple[str, str], set[str]] = {}  # (job, job it may import from) -> the names it may take


def module_files() -> dict[str, Path]:
    return {f"vtm.{pkg}.{f.stem}": f for pkg in PACKAGES for f in sorted((ROOT / pkg).glob("*.py"))}


def imports_of(path: Path, modules: set[str]) -> dict[str, set[str]]:
    """vtm modules that `path` imports anywhere in it (lazy imports in functions too) -> the names it takes from
    each ("*": the module itself)."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.setdefault(alias.name, set()).add("*")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:  # from vtm.pipeline import extract
                    found.setdefault(f"{node.module}.{alias.name}", set()).add("*")
                elif node.module in modules:
                    found.setdefault(node.module, set()).add(alias.name)
    return found


def job_import_problems(
    graph: dict[str, dict[str, set[str]]], jobs: set[str], allowed: dict
) -> tuple[list[str], set[tuple[str, str]]]:
    """Each chain by which a job reaches another job through modules that are not jobs, and the allowed edges used."""
    problems, used = [], set()
    for job in sorted(jobs):
        seen, queue = {job}, deque([[job]])
        while queue:
            chain = queue.popleft()
            for imported, names in sorted(graph.get(chain[-1], {}).items()):
                if imported in seen:
                    continue
                seen.add(imported)
                if imported not in jobs:
                    queue.append([*chain, imported])
                elif names <= allowed.get((chain[-1], imported), set()):
                    used.add((chain[-1], imported))
                else:
                    problems.append(" -> ".join([*chain, imported]) + f" ({', '.join(sorted(names))})")
    return problems, used


def test_no_job_imports_another_job():
    files = module_files()
    jobs = {f"vtm.pipeline.{name}" for name in JOBS}
    assert jobs <= set(files), f"jobs not found: {sorted(jobs - set(files))}"
    graph = {module: imports_of(path, set(files)) for module, path in files.items()}
    problems, used = job_import_problems(graph, jobs, ALLOWED)
    assert not problems, "jobs that import other jobs (move what they share into a module of its own):\n" + "\n".join(
        problems
    )
    assert used == set(ALLOWED), f"no longer needed, delete from ALLOWED: {sorted(set(ALLOWED) - used)}"


def test_an_import_through_a_helper_or_beyond_the_allowed_names_is_found():
    graph = {
        "job_a": {"helper": {"*"}},
        "helper": {"job_b": {"thing"}},
        "job_b": {"helper": {"*"}},  # back to itself: not another job
        "job_c": {"job_b": {"allowed_thing"}},
        "job_d": {"job_b": {"allowed_thing", "more"}},
    }
    allowed = {("job_c", "job_b"): {"allowed_thing"}, ("job_d", "job_b"): {"allowed_thing"}}
    problems, used = job_import_problems(graph, {"job_a", "job_b", "job_c", "job_d"}, allowed)
    assert problems == ["job_a -> helper -> job_b (thing)", "job_d -> job_b (allowed_thing, more)"]
    assert used == {("job_c", "job_b")}
