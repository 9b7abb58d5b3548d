"""The README's runnable examples: each ```python block right after a line
``<!-- example: NAME -->`` runs as it is, in an empty temporary directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"^<!-- example: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)^```$",
                     re.MULTILINE | re.DOTALL)


def examples() -> dict[str, str]:
    return {m["name"]: m["code"] for m in EXAMPLE.finditer(README.read_text())}


def test_the_python_api_example_is_there():
    assert "python-api" in examples()


@pytest.mark.parametrize("name", sorted(examples()))
def test_readme_example_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(examples()[name], f"README.md example {name}", "exec"), {"__name__": name})
    out = capsys.readouterr().out
    if name == "python-api":
        assert "fallback" in out and "(1, 32)" in out
