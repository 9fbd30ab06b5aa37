"""benchmarks/gpu_checks.sh, the one prepared run on a lent GPU, rehearsed here: ``--dry-run``
runs every step on the CPU at tiny sizes (1-2 minutes on 2 idle cores, about 5 on busy ones,
most of it the compiled search's cold compile: marked slow) and each step must write its
figures to $OUT; a failed wheel install or a broken import after it must stop the run before
any step, with a clear message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from hbacli.runtime import has_cpp_compiler

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"
STEPS = ("cuda_tests", "augment", "search", "search_compiled", "quality", "regularisation")

pytestmark = pytest.mark.skipif(not (shutil.which("bash") and shutil.which("timeout")),
                                reason="needs bash and coreutils' timeout")


def run_script(out: Path, *args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("HBA_WHEELS", "OUT")}
    environment.update(OUT=str(out), **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_its_figures(tmp_path):
    done = run_script(tmp_path, "--dry-run", timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(STEPS)
    compiled_skipped = not has_cpp_compiler()
    for s in steps:
        name = s["step"]
        assert (tmp_path / f"{name}.log").is_file() or s.get("skipped"), name
        if name == "search_compiled" and compiled_skipped:
            assert s["skipped"] and "search_compiled skipped" in summary
            continue
        assert s["exit"] == 0 and f"{name} exit 0" in summary, (name, summary)
    # every benchmark's JSON line: in its own file as printed, and gathered in the summary
    for name in ("augment", "search", "search_compiled", "quality", "regularisation"):
        if name == "search_compiled" and compiled_skipped:
            continue
        lines = (tmp_path / f"{name}.jsonl").read_text().splitlines()
        assert lines, name
        figures = json.loads(lines[-1])
        assert lines[-1] in summary
        if name.startswith("search"):
            assert figures["epochs"] == 1 and figures["ratio"] > 0
            assert figures["compile"] is (name == "search_compiled")
        elif name == "augment":
            assert "real" in figures["images"] or "digits" in figures["images"]
            assert figures["batched"] and figures["pil_loop_img_per_s"] > 0
        elif name == "regularisation":
            assert figures["benchmark"] == "regularisation"
            assert set(figures["summary"]) == {"hba", "stn", "fixed"}
        else:
            assert figures["benchmark"] == "quality" and "harmful" in figures
    assert (tmp_path / "cuda_tests.xml").is_file()


def _wheel(folder: Path, body: str) -> Path:
    """A minimal pure-Python 'pydantic' wheel whose package runs `body` on import."""
    path = folder / "pydantic-0.0.1-py3-none-any.whl"
    files = {"pydantic/__init__.py": body,
             "pydantic-0.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: pydantic\n"
                                                  "Version: 0.0.1\n",
             "pydantic-0.0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                               "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    files["pydantic-0.0.1.dist-info/RECORD"] = "".join(f"{n},,\n" for n in files) + \
        "pydantic-0.0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.mark.parametrize("case", ["not a wheel", "import fails"])
def test_a_failed_wheel_install_or_import_stops_before_any_step(tmp_path, case):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    if case == "not a wheel":
        (wheels / "pydantic-0.0.1-py3-none-any.whl").write_bytes(b"not a zip file")
        message = "pip could not install the wheels"
    else:
        _wheel(wheels, "raise ImportError('broken on purpose')\n")
        message = "import pydantic, hbacli fails"
    out = tmp_path / "out"
    done = run_script(out, "part1", timeout=120, HBA_WHEELS=str(wheels))
    assert done.returncode == 3, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    assert "SETUP FAILED" in summary and message in summary and "setup exit 3" in summary
    assert "SETUP FAILED" in done.stdout
    assert (out / "steps.jsonl").read_text() == ""  # no step started
    assert not (out / "cuda_tests.log").exists()
