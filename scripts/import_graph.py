#!/usr/bin/env python
"""Print sketchlab's import graph between its top-level parts, and any import cycle between modules.

    python scripts/import_graph.py          # edges like "sketchlab.models -> sketchlab.data"
    lint-imports                            # the layering contract in setup.cfg
"""

from __future__ import annotations

import sys

import grimp


def part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One chain per module pair that imports each other, directly or through others."""
    found = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                found.add(tuple(sorted((importer, imported))))
    return sorted(found)


def main() -> int:
    graph = grimp.build_graph("sketchlab")
    edges = sorted({(part(a), part(b)) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                    if part(a) != part(b)})
    for a, b in edges:
        print(f"{a} -> {b}")
    found = cycles(graph)
    for a, b in found:
        print(f"cycle: {a} <-> {b}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
