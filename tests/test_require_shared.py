"""conftest.require_shared / require_module: skip for developers, fail in CI."""

import pytest


def outcome(call) -> tuple[str, str]:
    """("failed" | "skipped" | "returned", message): a skip must not escape as the test's own
    outcome (pytest.raises(Failed) would let a Skipped through and the test would only skip)."""
    try:
        value = call()
    except pytest.fail.Exception as err:
        return "failed", str(err)
    except pytest.skip.Exception as err:
        return "skipped", str(err)
    return "returned", repr(value)


@pytest.fixture()
def helpers(shared_data_helpers):
    return shared_data_helpers


@pytest.mark.parametrize("ci", ["true", "True", "1"])
def test_missing_shared_data_fails_in_ci(helpers, tmp_path, monkeypatch, ci):
    require_shared, _ = helpers
    monkeypatch.setenv("CI", ci)
    kind, message = outcome(lambda: require_shared("ml-latest-small", root=tmp_path))
    assert kind == "failed", (kind, message)
    assert "missing: CI" in message and str(tmp_path / "ml-latest-small") in message


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_shared_data_skips_outside_ci(helpers, tmp_path, monkeypatch, ci):
    require_shared, _ = helpers
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    kind, message = outcome(lambda: require_shared("ml-latest-small", root=tmp_path))
    assert kind == "skipped" and "real data not found" in message, (kind, message)


def test_present_shared_data_is_returned_in_and_out_of_ci(helpers, tmp_path, monkeypatch):
    require_shared, _ = helpers
    (tmp_path / "ml-latest-small").mkdir()
    for ci in ("true", "false"):
        monkeypatch.setenv("CI", ci)
        assert require_shared("ml-latest-small", root=tmp_path) == tmp_path / "ml-latest-small"


def test_missing_optional_module_fails_in_ci_and_skips_outside(helpers, monkeypatch):
    _, require_module = helpers
    name = "relrec_no_such_optional_module"
    monkeypatch.setenv("CI", "true")
    kind, message = outcome(lambda: require_module(name))
    assert kind == "failed" and f"{name} is not importable in CI" in message, (kind, message)
    monkeypatch.setenv("CI", "false")
    assert outcome(lambda: require_module(name))[0] == "skipped"
    assert require_module("json").dumps([1]) == "[1]"
