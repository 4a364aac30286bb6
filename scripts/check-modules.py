#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle: the
top-level modules, and the files inside each folder.

A module is a file `src/<name>.rs` or a folder `src/<name>/`; an edge is any
`crate::<name>` path (or `rewardhooks::<name>` in main.rs) in another module.
Run by `make lint`. Prints the module graph with --graph.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
ROOTS = {"lib.rs", "main.rs"}


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    # Unit tests (at the end of a file, by convention) may reach anywhere.
    text = text.split("#[cfg(test)]", 1)[0]
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def graph() -> dict[str, set[str]]:
    modules = {module_of(p) for p in SRC.rglob("*.rs") if p.name not in ROOTS or p.parent != SRC}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for path in SRC.rglob("*.rs"):
        if path.parent == SRC and path.name in ROOTS:
            continue
        here = module_of(path)
        text = strip_comments(path.read_text())
        for target in re.findall(r"\bcrate::(\w+)", text):
            if target in modules and target != here:
                edges[here].add(target)
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            for target in re.findall(r"(?:^|,)\s*(\w+)", group):
                if target in modules and target != here:
                    edges[here].add(target)
    return edges


def file_of(parts: list[str]) -> pathlib.Path | None:
    """The deepest source file a `crate::a::b::c` path names."""
    for n in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".rs"), base / "mod.rs"):
            if candidate.is_file():
                return candidate
    return None


def file_graph() -> dict[str, set[str]]:
    """Edges between files of one folder: `crate::` paths and `super::`."""
    files = [p for p in SRC.rglob("*.rs") if not (p.parent == SRC and p.name in ROOTS)]
    edges: dict[str, set[str]] = {str(p.relative_to(SRC)): set() for p in files}
    for path in files:
        here = str(path.relative_to(SRC))
        text = strip_comments(path.read_text())
        targets = [file_of(m.split("::")) for m in re.findall(r"\bcrate::((?:\w+::)*\w+)", text)]
        parent = path.parent if path.name != "mod.rs" else path.parent.parent
        for m in re.findall(r"\bsuper::(\w+)", text):
            sibling = parent / f"{m}.rs"
            targets.append(sibling if sibling.is_file() else (parent / "mod.rs" if (parent / "mod.rs").is_file() else None))
        for target in targets:
            if target is None or target == path or target.parent != path.parent:
                continue
            edges[here].add(str(target.relative_to(SRC)))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    edges = graph()
    if "--graph" in sys.argv:
        for m in sorted(edges):
            print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
    files = file_graph()
    modules = len(edges)
    found = cycles(edges) + cycles(files)
    edges = {**edges, **files}
    for c in found:
        ties = [f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c]
        print(f"module cycle: {', '.join(c)} ({'; '.join(ties)})", file=sys.stderr)
    if found:
        return 1
    print(f"module graph: {modules} modules, {len(files)} files, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
