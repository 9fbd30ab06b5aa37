"""The README's set-up commands and .ci/run must not drift apart."""

import re

from conftest import ROOT


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _readme_test_commands() -> list[str]:
    """The lines of the README's first bash block that runs pytest."""
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    block = next(b for b in blocks if "pytest" in b)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_commands_in_order():
    commands = _readme_test_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert all(c in ci_lines for c in commands), (commands, ci_lines)
    assert [ci_lines.index(c) for c in commands] == sorted(ci_lines.index(c) for c in commands)


def test_the_readme_test_commands_run_the_default_selection_and_the_slow_tests(pytestconfig):
    """pyproject's addopts leave the slow tests out of a plain `python -m pytest`; the README
    (and so CI) must run them too, with `-m slow`, which replaces addopts' `-m`."""
    addopts = pytestconfig.getini("addopts")
    assert addopts[addopts.index("-m") + 1] == "not slow", addopts
    assert any(m.startswith("slow:") for m in pytestconfig.getini("markers"))
    commands = _readme_test_commands()
    assert any(c.endswith("python -m pytest") for c in commands), commands
    assert any(c.endswith("python -m pytest -m slow") for c in commands), commands


def test_readme_main_job_uses_the_embedded_dataset():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert "hba search --dataset digits" in blocks[0]
