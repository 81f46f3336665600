"""The package's layers stay as docs/layout.md draws them: modules readable in one sitting, no
circle of imports, and every import pointing down the layers (imports inside functions count)."""

import ast
from collections import defaultdict

from .conftest import ROOT

SRC = ROOT / "src"
# Lowest first. A module may import its own unit and the units of lower layers; units on one
# layer import neither each other. The root package (`unclip`, lazy) is importable from anywhere.
LAYERS = [
    ("config", "validate", "plot"),  # foundations: no unclip imports
    ("runtime",),  # devices, precision, compile backends, cache, weights
    ("data", "diffusion"),  # data sets and image transforms; the diffusion process
    ("models",),  # networks
    ("pipelines",),  # the contract, the registry, one member per model family
    ("tasks",),  # generate, manipulate, probe, evaluate
    ("train",),
    ("web",),
    ("cli",),  # the command line
    ("__main__",),
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def modules() -> dict[str, tuple]:
    out = {}
    for path in (SRC / "unclip").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the unclip modules it imports, anywhere in its text."""
    mods, edges = modules(), defaultdict(set)
    for name, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != "unclip":
                    continue
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    edges[name].add(target)
    return edges


def unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in (SRC / "unclip").rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_at_most_ten_modules_stand_at_the_top():
    top = [p.name for p in (SRC / "unclip").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 10, top


def test_every_unit_has_a_layer():
    units = {unit(m) for m in modules()} - {None}
    assert units <= set(LAYER), f"put {sorted(units - set(LAYER))} on a layer (here and in docs/layout.md)"


def test_imports_point_down_the_layers():
    wrong = []
    for src, targets in import_graph().items():
        for dst in targets:
            a, b = unit(src), unit(dst)
            if a is None and src == "unclip":
                wrong.append(f"{src} -> {dst} (the root package loads lazily, by name)")
            elif b is not None and a != b and LAYER[b] >= LAYER[a]:
                wrong.append(f"{src} -> {dst}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_circle_of_imports():
    edges, seen, done, circles = import_graph(), set(), set(), []

    def visit(node, path):
        seen.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done and nxt not in seen:
                visit(nxt, path + [nxt])
        done.add(node)

    for node in sorted(modules()):
        if node not in done:
            seen.clear()
            visit(node, [node])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_checks_catch_a_planted_circle_and_an_upward_import(tmp_path, monkeypatch):
    pkg = tmp_path / "unclip"
    for rel, text in {"__init__.py": "", "models/__init__.py": "", "pipelines/__init__.py": "",
                      "models/net.py": "from unclip.pipelines import pipe\n",
                      "pipelines/pipe.py": "def f():\n    from unclip.models.net import x\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", tmp_path)
    edges = import_graph()
    assert edges["unclip.models.net"] == {"unclip.pipelines.pipe"}
    assert edges["unclip.pipelines.pipe"] == {"unclip.models.net"}
    try:
        test_no_circle_of_imports()
    except AssertionError as e:
        assert "unclip.models.net -> unclip.pipelines.pipe -> unclip.models.net" in str(e)
    else:
        raise AssertionError("the planted circle went unseen")
    try:
        test_imports_point_down_the_layers()
    except AssertionError as e:
        assert "unclip.models.net -> unclip.pipelines.pipe" in str(e)
    else:
        raise AssertionError("the upward import went unseen")
