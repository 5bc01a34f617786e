"""The package's import rules (docs/architecture.md): imports run one way, from the commands down to the core,
with no circle. Every import counts, also one inside a function."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "saebasis"

# Bottom to top. A module may import its own layer or any layer below, never one above.
LAYERS = [
    ("saebasis.core",),
    ("saebasis.judges",),
    ("saebasis.data",),
    ("saebasis.interventions",),
    ("saebasis.config", "saebasis.runs", "saebasis.validate"),
    ("saebasis.training", "saebasis.corpus", "saebasis.eval", "saebasis.interpret", "saebasis.export"),
    ("saebasis.experiments",),
    ("saebasis.api",),
    ("saebasis.cli", "saebasis"),
]


def layer(module: str) -> int:
    best, level = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"{module} is in no layer: add its package to LAYERS and docs/architecture.md"
    return level


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """saebasis modules `path` imports (relative imports resolved; `from pkg import sub` resolves to pkg.sub)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "saebasis"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != "saebasis":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                exists = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                ).exists()
                found.add(sub if exists else base)
    found.discard(me)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_import_runs_down_the_layers():
    up = [
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, deps in graph().items()
        for d in deps
        if m != "saebasis" and layer(d) > layer(m)
    ]
    assert not up, "imports running back up:\n" + "\n".join(sorted(up))


def test_no_import_circle():
    g = {m: {d for d in deps if d in graph_keys} for graph_keys in [set(graph())] for m, deps in graph().items()}
    g.pop("saebasis", None)  # the package root only re-exports the API, lazily
    for deps in g.values():
        deps.discard("saebasis")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_the_rules_catch_a_back_up_arrow(tmp_path, monkeypatch):
    """The checker itself: a core module importing an experiment is reported."""
    fake = tmp_path / "saebasis"
    (fake / "core").mkdir(parents=True)
    (fake / "experiments").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "core" / "__init__.py").write_text("")
    (fake / "experiments" / "__init__.py").write_text("")
    (fake / "experiments" / "compare.py").write_text("")
    (fake / "core" / "hooks.py").write_text("def f():\n    from saebasis.experiments import compare\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert imports(fake / "core" / "hooks.py") == {"saebasis.experiments.compare"}
    assert layer("saebasis.experiments.compare") > layer("saebasis.core.hooks")
