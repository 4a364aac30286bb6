#!/usr/bin/env python3
"""Checks docs/guarantees.md: every test it names (`path::function`, a path
under tests/ or src/) must exist as a function in that file, so a promise
never stays "pinned" by a test that was renamed or deleted. Prints the counts
of promises, pinned and not pinned."""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
doc = root / "docs" / "guarantees.md"
ref = re.compile(r"`((?:tests|src)/[\w/.-]+\.rs)::(\w+)`")
errors, promises, status = [], 0, {}
for lineno, line in enumerate(doc.read_text().splitlines(), 1):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("|") or len(cells) < 5 or not cells[0].isdigit():
        continue
    promises += 1
    state = cells[-1]
    status[state] = status.get(state, 0) + 1
    names = ref.findall(cells[3])
    if state.startswith("pinned") and not names:
        errors.append(f"{doc.name}:{lineno}: promise {cells[0]} is '{state}' but names no test")
    for path, name in names:
        source = root / path
        if not source.is_file():
            errors.append(f"{doc.name}:{lineno}: {path} does not exist")
        elif not re.search(rf"\bfn {name}\b", source.read_text()):
            errors.append(f"{doc.name}:{lineno}: no test `{name}` in {path}")
for e in errors:
    print(e, file=sys.stderr)
pinned = sum(n for s, n in status.items() if s.startswith("pinned"))
print(f"guarantees: {promises} promises, {pinned} pinned "
      f"({status.get('pinned (19)', 0)} by issue 19), {status.get('not pinned', 0)} not pinned")
sys.exit(1 if errors or promises == 0 else 0)
