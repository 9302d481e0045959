"""Bad input through the real console command: one line naming file, row and column; exit 2;
no traceback. Dropped rows are counted in the rejected-rows report and the manifest."""

import json
import subprocess
import sys

import pytest

ITEMS = "item_id,title\n1,One\n2,Two\n3,Three\n"


def relrec(*args):
    return subprocess.run([sys.executable, "-m", "relrec.cli", *args], capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def write(path, content, mode="w"):
    with open(path, mode) as handle:
        handle.write(content)
    return path


def interactions(rows):
    return "user_id,item_id,timestamp\n" + "".join(f"{r}\n" for r in rows)


@pytest.mark.parametrize("case, content, expected", [
    ("missing column", "user_id,item_id\nu,1\n", ["column 'timestamp'", "missing"]),
    ("bad timestamp", interactions(["u,1,100", "u,2,yesterday"]),
     ["row 3", "column 'timestamp'", "yesterday"]),
    ("empty file", "", ["empty"]),
    ("header only", "user_id,item_id,timestamp\n", ["empty"]),
])
def test_bad_interactions_give_one_line_error(tmp_path, case, content, expected):
    bad = write(tmp_path / "interactions.csv", content)
    items = write(tmp_path / "items.csv", ITEMS)
    completed = relrec("prepare", "--interactions", str(bad), "--items", str(items),
                       "--out", str(tmp_path / "run"))
    assert completed.returncode == 2, case
    assert "Traceback" not in completed.stderr
    message = " ".join(completed.stderr.split())
    assert "interactions.csv" in message
    for fragment in expected:
        assert fragment in message, (case, message)


def test_non_utf8_file_names_file_and_row(tmp_path):
    bad = write(tmp_path / "items.csv", "item_id,title\n1,One\n2,Caf\xe9\n".encode("latin-1"),
                "wb")
    good = write(tmp_path / "interactions.csv", interactions(["u,1,100"]))
    completed = relrec("prepare", "--interactions", str(good), "--items", str(bad),
                       "--out", str(tmp_path / "run"))
    message = " ".join(completed.stderr.split())
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "items.csv" in message and "UTF-8" in message.upper().replace("UTF8", "UTF-8")
    assert "row 3" in message or "line 3" in message


def test_missing_config_and_run_dir_are_clear(tmp_path):
    completed = relrec("train", str(tmp_path / "nowhere"))
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "relrec prepare" in completed.stderr
    completed = relrec("prepare", "--out", str(tmp_path / "r"), "--config",
                       str(tmp_path / "missing.toml"))
    assert completed.returncode == 2 and "missing.toml" in completed.stderr


def test_unknown_or_absent_training_device_is_one_line(tmp_path):
    import torch

    completed = relrec("train", str(tmp_path / "nowhere"), "--device", "gpu")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr
    assert "device" in completed.stderr
    if not torch.cuda.is_available():
        completed = relrec("train", str(tmp_path / "nowhere"), "--device", "cuda")
        assert completed.returncode == 2 and "no CUDA device" in completed.stderr


def test_dropped_rows_are_counted_not_silent(tmp_path):
    rows = [f"u{u},{1 + (t % 3)},{1000 * u + 60 * t}" for u in range(6) for t in range(6)]
    rows += ["u0,99,5", "u0,1,0", ",1,7"]  # unknown item, duplicate of the first row, null user
    good = write(tmp_path / "interactions.csv", interactions(rows))
    items = write(tmp_path / "items.csv", ITEMS)
    completed = relrec("prepare", "--interactions", str(good), "--items", str(items),
                       "--out", str(tmp_path / "run"))
    assert completed.returncode == 0, completed.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["rejected"] == {"unknown item_id": 1, "duplicate": 1, "null": 1}
    report = (tmp_path / "run" / "data" / "rejected_rows.csv").read_text().splitlines()
    assert len(report) == 4  # header + 3 rows
    assert manifest["rows"]["interactions"] == 36


def test_toml_config_drives_prepare(tmp_path):
    rows = [f"u{u},{1 + (t % 3)},{1000 * u + 60 * t}" for u in range(6) for t in range(6)]
    good = write(tmp_path / "interactions.csv", interactions(rows))
    items = write(tmp_path / "items.csv", ITEMS)
    config = write(tmp_path / "run.toml", "[prepare]\nwindow = 1\nsession_gap_seconds = 600\n")
    completed = relrec("prepare", "--interactions", str(good), "--items", str(items),
                       "--out", str(tmp_path / "run"), "--config", str(config))
    assert completed.returncode == 0, completed.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["prepare"]["window"] == 1
    assert manifest["config"]["prepare"]["session_gap_seconds"] == 600
    bad = write(tmp_path / "bad.toml", "[prepare]\nwindoww = 1\n")
    completed = relrec("prepare", "--interactions", str(good), "--items", str(items),
                       "--out", str(tmp_path / "run2"), "--config", str(bad))
    assert completed.returncode == 2 and "bad.toml" in completed.stderr
