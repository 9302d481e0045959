"""The sealed test period: every read of it is deliberate, counted and reported.

Everything is tuned on the validation period. The test period is read only through
:func:`open_test_period` (the CLI's ``--test``), which counts the read twice:

* in the run's manifest (``test_reads``), and
* in a ledger *outside* the run folder (``$RELREC_TEST_LEDGER``, default
  ``~/.cache/relrec/test_reads.json``) keyed by a hash of the test pairs and the split
  boundaries, so re-preparing the same data or overwriting the run does not reset the count.

:func:`require_open` guards the functions that score held-out pairs: asking for the test
period of a run that no one opened in this process raises :class:`SealedTestPeriod`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from relrec.errors import InputError, RelrecError
from relrec.manifest import atomic_write_json, read_manifest, update_manifest

LEDGER_ENVIRONMENT_VARIABLE = "RELREC_TEST_LEDGER"

# run folders whose test period was opened (and counted) in this process
_opened: set[Path] = set()


class SealedTestPeriod(RelrecError):
    """The test period was asked for without opening it (``--test``)."""


def ledger_path() -> Path:
    configured = os.environ.get(LEDGER_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "relrec" / "test_reads.json"


def split_key(run) -> str:
    """Hash of the test pairs (trigger, target, user) and the split boundaries: the same data
    prepared again gets the same key, another split or other data another one."""
    digest = hashlib.sha256()
    digest.update(json.dumps(run.manifest.get("split", {}), sort_keys=True).encode())
    pairs = run.test_pairs
    columns = [c for c in ("trigger_index", "target_index", "user_id") if c in pairs.columns]
    digest.update(pd.util.hash_pandas_object(pairs[columns], index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _record_read(run, key: str, entry: dict) -> dict:
    """Count one read in the ledger and the run's manifest, both under the ledger's lock, so
    two evaluations at once lose neither count."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = json.loads(path.read_text()) if path.exists() else {}
        record = ledger.setdefault(key, {"reads": 0, "entries": []})
        record["reads"] += 1
        record["entries"].append(entry)
        atomic_write_json(path, ledger)
        data_reads = int(record["reads"])
        counted = read_manifest(run.run_dir).get("test_reads", {"count": 0, "reads": []})
        counted["count"] = int(counted.get("count", 0)) + 1
        counted.setdefault("reads", []).append({"at": entry["at"], "purpose": entry["purpose"],
                                                "data_reads": data_reads})
        counted["data_reads"] = data_reads
        counted["ledger"] = str(path)
        update_manifest(run.run_dir, "test_reads", counted)
        return counted


def open_test_period(run, purpose: str) -> dict:
    """Count one read of ``run``'s test period (manifest and ledger) and unseal it for this
    process. Returns ``{"run": reads of this run, "data": reads of this data and split,
    "ledger": path}``; print it beside the numbers."""
    if run.manifest.get("split", {}).get("test_start") is None:
        raise InputError(f"{run.run_dir}: prepared with --test-fraction 0, so there is no "
                         "test period to read")
    resolved = Path(run.run_dir).resolve()
    entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "purpose": purpose, "run": str(resolved)}
    counted = _record_read(run, split_key(run), entry)
    run.manifest["test_reads"] = counted
    _opened.add(resolved)
    return {"run": counted["count"], "data": counted["data_reads"], "ledger": counted["ledger"]}


def include_in_read(run) -> None:
    """Unseal ``run`` as part of a read already counted for another run with the same test
    pairs (a run compared with ``--against``; the caller checks the pairs are equal)."""
    _opened.add(Path(run.run_dir).resolve())


def require_open(run) -> None:
    if Path(run.run_dir).resolve() not in _opened:
        raise SealedTestPeriod(
            f"{run.run_dir}: the test period is sealed; choices are made on validation. "
            "Read it deliberately with `--test` (library: "
            "relrec.evaluate.sealed.open_test_period), which counts the read")


def reads_line(reads: dict) -> str:
    return (f"test period read {reads['data']} time(s) for this data and split "
            f"({reads['run']} by this run; ledger {reads['ledger']})")
