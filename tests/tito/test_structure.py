"""tito's own structure: no import cycles between its files (counting imports inside
functions too), and no file replaces another module's functions at run time."""

import ast
from pathlib import Path

TITO = Path(__file__).resolve().parents[2] / "tito"


def tito_imports(path: Path) -> set[str]:
    """The tito files `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tito.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "tito":
                found |= {a.name for a in node.names}
            elif node.module.startswith("tito."):
                found.add(node.module.split(".")[1])
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {p.stem: tito_imports(p) for p in TITO.glob("*.py") if p.stem != "__main__"}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_tito_files():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_file_assigns_another_modules_attributes():
    """`export.read_notebook = ...` style patching: a module attribute assigned from outside."""
    offenders = []
    for path in TITO.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in imported and target.value.id not in {"self", "os", "sys"}:
                    offenders.append(f"{path.name}:{node.lineno}: {target.value.id}.{target.attr} = ...")
    assert not offenders, "\n".join(offenders)
