"""No class in daemon/ or protocol/ is longer than 400 lines (issue #9): a class that long holds
more than one idea, and should be split along its seams into small modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def _classes() -> list[tuple[str, int]]:
    found = []
    for package in ("daemon", "protocol"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    assert node.end_lineno is not None
                    size = node.end_lineno - node.lineno + 1
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", size))
    return found


def test_the_scan_sees_the_classes():
    names = [name for name, _ in _classes()]
    assert any(name.endswith(" FakeConnection") for name in names)
    assert len(names) > 50


def test_no_class_is_longer_than_400_lines():
    too_long = {name: size for name, size in _classes() if size > MAX_LINES}
    assert not too_long, f"classes over {MAX_LINES} lines (split them): {too_long}"
