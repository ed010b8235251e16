"""The shape of the code: no import cycles, keyword-only wide signatures, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "flatgen"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every flatgen module `path` imports, at any depth (functions, TYPE_CHECKING included).

    `from flatgen.x import y` counts as importing flatgen.x.y when that is a module, else
    flatgen.x; a package's __init__ is what `import flatgen.x` runs.
    """
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("flatgen")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("flatgen"):
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in modules else mod)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def _public_functions():
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.startswith("_"):
                continue
            body = node.body if isinstance(node, ast.ClassDef | ast.Module) else []
            for fn in body:
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    if fn.name.startswith("_") and fn.name != "__init__":
                        continue
                    yield path, node, fn


def test_wide_public_signatures_are_keyword_only():
    """More than 3 parameters (self/cls not counted): the ones past the third are keyword-only."""
    bad = []
    for path, owner, fn in _public_functions():
        if isinstance(owner, ast.Module) and fn.name == "__init__":
            continue
        args = fn.args
        positional = args.posonlyargs + args.args
        if isinstance(owner, ast.ClassDef) and positional and positional[0].arg in ("self", "cls"):
            positional = positional[1:]
        decorators = {ast.unparse(d) for d in fn.decorator_list}
        # typer commands and pydantic validators have signatures set by their framework
        if any("command" in d or "validator" in d for d in decorators):
            continue
        if len(positional) + len(args.kwonlyargs) > 3 and len(positional) > 3:
            bad.append(f"{path.relative_to(SRC.parent)}:{fn.lineno} {fn.name}")
    assert not bad, f"{len(bad)} wide public functions take more than 3 positional arguments:\n" + \
        "\n".join(bad)


def test_modules_are_small():
    sizes = {p: len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    big = {str(p.relative_to(SRC.parent)): n for p, n in sizes.items() if n > 400}
    assert not big, f"modules over 400 lines: {big}"
    # the command line is a thin shell: each command module parses, calls the library, prints
    fat = {str(p.relative_to(SRC.parent)): n for p, n in sizes.items()
           if p.parent.name == "cli" and n >= 250}
    assert not fat, f"cli modules of 250 lines or more: {fat}"


# The layers of docs/ARCHITECTURE.md, lowest first: a module imports only from its own package
# or from packages strictly below it. Top-level modules not listed are the low layer.
LAYERS = {
    "diffusion": 2.0, "data": 2.0, "models": 2.1, "optim": 2.1, "config": 2.2,
    "train": 3.0, "metrics": 3.0,
    "analysis": 3.5, "robustness": 4.0, "dro": 4.0, "evaluate": 4.0, "flatness": 4.0,
    "export": 4.0, "open_model": 4.0, "sharpness_history": 4.1, "classify": 4.5, "api": 4.5,
    "report": 5.0, "study": 6.0, "cli": 7.0,
}


def _layer(module: str) -> tuple[str, float]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, LAYERS.get(top, 1.0)


def test_each_layer_imports_only_from_the_layers_below_it():
    modules = _modules()
    bad = []
    for name, path in sorted(modules.items()):
        pkg, here = _layer(name)
        for imp in sorted(_imports(path, name, modules)):
            other, there = _layer(imp)
            if imp != "flatgen" and other != pkg and there >= here and not here == there == 1.0:
                bad.append(f"{name} (layer {here:g}) imports {imp} (layer {there:g})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_report_reads_records_only():
    """The report is a pure function of typed records: nothing from the study engine, training
    or the models."""
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("flatgen.report"):
            ups = {m for m in _imports(path, name, modules)
                   if m.split(".")[1] in ("study", "train", "models", "cli")}
            assert not ups, f"{name} imports {sorted(ups)}"


KEY_LITERALS = ('"ladders"', '"lambda_max"', '"hessian_trace"', '"steps_adm"', '"steps_ddim"',
                '"quant_w', '"attack_x', '"noise_weights"', '"loss_increase_', '"exposure_gap_',
                '"robust_eps_', '"robustness_detail"', '"perturbation_detail"', "@T{", "@float")


def test_no_module_but_records_spells_a_metric_or_ladder_key():
    """The modules that write (study, the suites) and read (report) a study's records."""
    found = []
    paths = [p for d in ("study", "report", "robustness/suites") for p in (SRC / d).rglob("*.py")]
    for path in paths:
        text = path.read_text()
        found += [f"{path.relative_to(SRC)}: {lit}" for lit in KEY_LITERALS if lit in text]
    assert not found, "keys spelled outside flatgen/records.py:\n" + "\n".join(found)
