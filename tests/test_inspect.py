from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from aiosignals._cli import main

ROOT = pathlib.Path(__file__).parent.parent


def _rows(output: str, title: str) -> list[list[str]]:
    """Return the table rows (split on runs of spaces) of the block headed *title*."""
    block = next(b for b in output.split("\n\n") if b.startswith(title))
    return [line.split() for line in block.splitlines()[2:]]


def test_lists_every_signal_of_the_module_with_its_receivers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each signal of the module is listed once, its receivers in call order with options."""
    assert main(["inspect", "tests.inspect_target"]) == 0
    out = capsys.readouterr().out
    titles = [block.splitlines()[0] for block in out.strip().split("\n\n")]
    assert titles == [
        "user_registered: tests.inspect_target.UserRegistered",
        "order_placed: tests.inspect_target.OrderPlaced",
        "orders.cancelled (attribute renamed): tests.inspect_target.OrderPlaced",
        "quiet: tests.inspect_target.UserRegistered",
    ]
    assert _rows(out, "user_registered") == [
        ["RECEIVER", "SENDER", "PRIORITY", "PHASE", "DURABLE", "ONCE", "WEAK"],
        ["tests.inspect_target.send_welcome", "ANY", "10", "immediate", "no", "no", "no"],
        [
            "tests.inspect_target.audit",
            "tests.inspect_target.AccountService",
            "0",
            "immediate",
            "no",
            "yes",
            "no",
        ],
        ["tests.inspect_target.sync_crm", "ANY", "0", "after_commit", "yes", "no", "no"],
        [
            "tests.inspect_target.AccountService.on_registered",
            "ANY",
            "-1",
            "immediate",
            "no",
            "no",
            "yes",
        ],
    ]
    assert "  mode Concurrent(limit=4), errors collect, timeout 2.5s, max_depth 8" in out
    assert _rows(out, "orders.cancelled")[1] == [
        "tests.inspect_target.on_cancelled",
        "'checkout'",
        "0",
        "immediate",
        "no",
        "no",
        "yes",
    ]
    assert "quiet: tests.inspect_target.UserRegistered\n" in out
    assert out.rstrip().endswith("no receivers")


def test_one_attribute(capsys: pytest.CaptureFixture[str]) -> None:
    """module:attribute lists that signal only, titled by its attribute when unnamed."""
    assert main(["inspect", "tests.inspect_target:order_placed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("order_placed: tests.inspect_target.OrderPlaced\n")
    assert "user_registered" not in out
    assert _rows(out, "order_placed")[1][0] == "tests.inspect_target.log_order"


def test_json_from_a_real_process() -> None:
    """python -m aiosignals inspect --json prints the same facts as parseable JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "aiosignals", "inspect", "tests.inspect_target", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["module"] == "tests.inspect_target"
    signals = {signal["attribute"]: signal for signal in report["signals"]}
    assert list(signals) == ["user_registered", "order_placed", "renamed", "quiet"]
    order = signals["order_placed"]
    assert order == {
        "name": None,
        "attribute": "order_placed",
        "payload_type": "tests.inspect_target.OrderPlaced",
        "mode": "Concurrent(limit=4)",
        "errors": "collect",
        "timeout": 2.5,
        "max_depth": 8,
        "receivers": [
            {
                "receiver": "tests.inspect_target.log_order",
                "sender": "ANY",
                "priority": 0,
                "phase": "immediate",
                "durable": False,
                "once": False,
                "weak": False,
                "thread": True,
                "timeout": None,
                "dispatch_uid": None,
                "errors": "log",
            }
        ],
    }
    users = signals["user_registered"]
    assert users["name"] == "user_registered"
    assert [r["dispatch_uid"] for r in users["receivers"]] == [
        "welcome-mail",
        None,
        "crm-sync",
        None,
    ]
    assert [(r["durable"], r["phase"]) for r in users["receivers"]][2] == (True, "after_commit")
    assert signals["quiet"]["receivers"] == []


def _fails(capsys: pytest.CaptureFixture[str], target: str) -> str:
    assert main(["inspect", target]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("aiosignals inspect: ")
    return captured.err


def test_a_missing_module_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A module that does not exist exits 2 with its name on stderr."""
    assert "no module named 'tests.no_such_module'" in _fails(capsys, "tests.no_such_module")


def test_a_module_that_fails_to_import_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module raising at import, or missing a dependency, exits 2 and says why."""
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('no settings')\n")
    (tmp_path / "needs_a_dependency.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(tmp_path)
    err = _fails(capsys, "raises_at_import")
    assert "importing 'raises_at_import' failed: RuntimeError: no settings" in err
    err = _fails(capsys, "needs_a_dependency")
    assert (
        "importing 'needs_a_dependency' failed: ModuleNotFoundError:"
        " No module named 'not_installed_anywhere'"
    ) in err


def test_a_bad_attribute_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing attribute, or one that is not a signal, exits 2 and names it."""
    err = _fails(capsys, "tests.inspect_target:missing")
    assert "'tests.inspect_target' has no attribute 'missing'" in err
    err = _fails(capsys, "tests.inspect_target:NOT_A_SIGNAL")
    assert "tests.inspect_target:NOT_A_SIGNAL is not a Signal but str" in err


@pytest.mark.parametrize("target", [":user_registered", "tests.inspect_target:", "a:b:c"])
def test_a_malformed_target_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    """A target that is not MODULE or MODULE:ATTRIBUTE exits 2 before importing anything."""
    assert "expected MODULE or MODULE:ATTRIBUTE" in _fails(capsys, target)


def test_a_module_without_signals(capsys: pytest.CaptureFixture[str]) -> None:
    """A module with no signals is not an error; the output says so."""
    assert main(["inspect", "json"]) == 0
    assert capsys.readouterr().out == "no signals in json\n"
    assert main(["inspect", "json", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"module": "json", "signals": []}
