"""A declared topic's name is written once, in include/config/topics.yaml; code and settings name its role."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from include.kafka_admin.catalog import DEFAULT_DECLARATIONS, load_catalog
from include.paths import CONFIG_DIR, PROJECT_ROOT

CODE_FOLDERS = ("include", "plugins", "dags")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose about a topic, not a use of its name)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _string_literals(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def _yaml_strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _yaml_strings(key)
            yield from _yaml_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _yaml_strings(item)
    elif isinstance(value, str):
        yield value


def _names_in(text: str, names: list[str]) -> list[str]:
    return [name for name in names if name in text]


def test_no_code_writes_a_declared_topic_name():
    names = load_catalog().names()
    found = [f"{path.relative_to(PROJECT_ROOT)}:{line}: {', '.join(hits)}"
             for folder in CODE_FOLDERS for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
             for line, text in _string_literals(path) if (hits := _names_in(text, names))]
    assert not found, "topic names written outside include/config/topics.yaml (use catalog.topic_for(role)):\n" + \
        "\n".join(found)


def test_no_other_settings_file_writes_a_declared_topic_name():
    names = load_catalog().names()
    found = [f"{path.name}: {', '.join(hits)}"
             for path in sorted(CONFIG_DIR.glob("*.yaml")) if path.name != DEFAULT_DECLARATIONS.name
             for text in _yaml_strings(yaml.safe_load(path.read_text())) if (hits := _names_in(text, names))]
    assert not found, "settings files name topics by role, not by name:\n" + "\n".join(found)
