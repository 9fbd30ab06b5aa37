import subprocess
import sys

from typer.testing import CliRunner

from hbacli.cli import _default_run_dir, app


def test_every_command_is_listed_and_documented():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("search", "evaluate", "export", "inspect"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_new_runs_get_their_own_folder_and_resume_finds_the_newest(tmp_path, monkeypatch):
    """--resume without --run-dir takes the newest run that holds a checkpoint (a folder left
    by something else, without one, is passed over)."""
    monkeypatch.chdir(tmp_path)
    for stamp in ("20260101-000000", "20260102-000000", "20260103-000000"):
        (tmp_path / "runs" / f"search-digits-{stamp}").mkdir(parents=True)
    for stamp in ("20260101-000000", "20260102-000000"):
        (tmp_path / "runs" / f"search-digits-{stamp}" / "checkpoint.pt").write_bytes(b"")
    newest = _default_run_dir("search-digits", True, "checkpoint.pt")
    assert newest.name == "search-digits-20260102-000000"
    fresh = _default_run_dir("search-digits", False, "checkpoint.pt")
    assert fresh.parent.name == "runs" and not fresh.exists()
    assert _default_run_dir("search-imagefolder:/a/b", False, "checkpoint.pt").name.startswith(
        "search-imagefolder__a_b-")


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "hbacli", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "inspect" in result.stdout


def test_search_flags_reach_the_resolved_config(monkeypatch, tmp_path):
    import hbacli.search

    seen = {}
    monkeypatch.setattr(hbacli.search, "run_search",
                        lambda cfg, **kwargs: seen.setdefault("cfg", cfg))
    result = CliRunner().invoke(app, [
        "search", "--dataset", "digits", "--sigma", "0.5", "--train-steps", "3", "--val-steps",
        "2", "--warmup-epochs", "1", "--val-bn-mode", "eval", "--lr", "0.02", "--hyper-lr",
        "0.01", "--weight-decay", "0.001", "--lr-schedule", "constant",
        "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.sigma, cfg.train_steps, cfg.val_steps, cfg.warmup_epochs, cfg.val_bn_mode) == \
        (0.5, 3, 2, 1, "eval")
    assert (cfg.lr, cfg.hyper_lr, cfg.weight_decay, cfg.lr_schedule) == \
        (0.02, 0.01, 0.001, "constant")


def test_bad_choice_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["search", "--dataset", "digits", "--val-bn-mode", "sideways",
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "val_bn_mode" in result.output
