"""relrec serve against a bare Starlette app at the framework's speed, measured with wrk.

    python benchmarks/bench_serve_wrk.py RUN_DIR [--duration 10] [--connections 16 64]
        [--http httptools|h11]

One go: a bare Starlette app (one route answering a fixed body of the size of a relrec list) and
``relrec serve`` in precomputed mode (RUN_DIR/export/related.parquet, exported at K=100 first
when missing) and in index mode (``--exact``), each on loopback under the same uvicorn (the
``--http`` parser, httptools by default like ``relrec serve``; one worker, no access log),
driven by ``wrk`` with a Lua script that varies the item id. Only 2xx answers count; the
service runs with its default limits. Then ``POST /v1/related`` (a batch of 50) and
``POST /v1/up-next`` (5 session items), and a hot-reload check: ``POST /admin/reload`` three
times during a wrk run must lose no request (every answer 2xx, no socket error).

Targets (docs/SERVING.md): relrec >= 50% of bare requests/s and p99 <= 3x bare p99 for both
modes at each connection count. Prints a table; writes ``bench_serve_wrk.json`` beside itself.
Bounded: every wrk run lasts ``--duration`` seconds. Loopback only. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import pandas as pd

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-0123456789abcdef-0123456789"
BARE_APP = '''
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = open({body!r}, "rb").read()


async def fixed(request):
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/{{path:path}}", fixed, methods=["GET", "POST"])])
'''
GET_LUA = '''
local ids = {{{ids}}}
math.randomseed({seed})
request = function()
  return wrk.format("GET", "/v1/items/" .. ids[math.random(#ids)] .. "/related?k={k}")
end
'''
POST_LUA = '''
local ids = {{{ids}}}
math.randomseed({seed})
request = function()
  local picked = {{}}
  for i = 1, {n} do picked[i] = '"' .. ids[math.random(#ids)] .. '"' end
  local body = '{{"{field}": [' .. table.concat(picked, ",") .. '], "k": {k}}}'
  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, body)
end
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(process, url: str, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready after {timeout}s")


def start_relrec(run_dir: Path, state_dir: Path, exact: bool, http: str):
    port = free_port()
    args = [sys.executable, "-m", "relrec.cli", "serve", str(run_dir), "--host", "127.0.0.1",
            "--port", str(port), "--state-dir", str(state_dir), "--log-level", "warning"]
    if exact:
        args.append("--exact")
    args += ["--http", http]
    env = dict(os.environ, RELREC_ADMIN_TOKEN=TOKEN, OMP_NUM_THREADS="1")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, "/readyz")
    return process, url


def start_bare(folder: Path, body: bytes, http: str):
    (folder / "body.json").write_bytes(body)
    (folder / "bare_app.py").write_text(BARE_APP.format(body=str(folder / "body.json")))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port",
         str(port), "--http", http, "--workers", "1", "--no-access-log", "--log-level",
         "warning"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, "/healthz")
    return process, url


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str, duration: float) -> dict:
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    elapsed = re.search(r"requests in ([\d.]+)(us|ms|s|m)", output)
    seconds = float(elapsed.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[
        elapsed.group(2)] if elapsed else duration
    return {"requests": requests, "non_2xx": non_2xx, "socket_errors": socket_errors,
            "rps_2xx": (requests - non_2xx) / seconds,
            "p50_ms": float(p50.group(1)) * UNITS[p50.group(2)] if p50 else None,
            "p99_ms": float(p99.group(1)) * UNITS[p99.group(2)] if p99 else None}


def search_batches(url: str) -> tuple[float, float]:
    """(batched index searches, requests they answered) from the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = [re.search(rf"^{name} ([\d.e+]+)$", text, re.M)
              for name in ("relrec_search_batches", "relrec_search_batched_requests")]
    return tuple(float(v.group(1)) if v else 0.0 for v in values)


def wrk(url: str, script: Path, connections: int, duration: int, threads: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d",
         f"{duration}s", "--latency", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    return parse_wrk(output, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--http", choices=["httptools", "h11"], default="httptools",
                        help="uvicorn's HTTP parser, for both servers")
    parser.add_argument("--out", type=Path, default=HERE / "bench_serve_wrk.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    run_dir = args.run_dir.resolve()
    export = run_dir / "export" / "related.parquet"
    if not export.exists():
        subprocess.run([sys.executable, "-m", "relrec.cli", "export", str(run_dir), "--out",
                        str(export), "--k", "100", "--no-progress"], check=True)
    stats = pd.read_parquet(run_dir / "pairs" / "item_stats.parquet")
    items = pd.read_parquet(run_dir / "data" / "items.parquet", columns=["item_id"])
    trained = items["item_id"].astype(str).to_numpy()[
        stats["candidate_frequency"].to_numpy() > 0]
    rng = random.Random(0)
    ids = rng.sample(list(trained), min(2000, len(trained)))
    lua_ids = ",".join(json.dumps(i) for i in ids)
    rows, checks = [], {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        get_lua = folder / "get.lua"
        get_lua.write_text(GET_LUA.format(ids=lua_ids, seed=1, k=args.k))
        batch_lua = folder / "batch.lua"
        batch_lua.write_text(POST_LUA.format(ids=lua_ids, seed=2, n=50, field="item_ids",
                                             k=args.k, path="/v1/related"))
        upnext_lua = folder / "upnext.lua"
        upnext_lua.write_text(POST_LUA.format(ids=lua_ids, seed=3, n=5, field="items",
                                              k=args.k, path="/v1/up-next"))
        servers = {}
        for mode in ("precomputed", "index"):
            process, url = start_relrec(run_dir, folder / f"state-{mode}", mode == "index",
                                        args.http)
            servers[mode] = (process, url)
        probe = httpx.get(f"{servers['precomputed'][1]}/v1/items/{ids[0]}/related",
                          params={"k": args.k})
        bare, bare_url = start_bare(folder, probe.content, args.http)
        try:
            for connections in args.connections:
                base = wrk(bare_url, get_lua, connections, args.duration, args.threads)
                rows.append({"server": "bare starlette", "request": "GET related",
                             "connections": connections, **base})
                for mode in ("precomputed", "index"):
                    before = search_batches(servers[mode][1])
                    result = wrk(servers[mode][1], get_lua, connections, args.duration,
                                 args.threads)
                    after = search_batches(servers[mode][1])
                    if after[0] > before[0]:  # index-path requests answered together
                        result["mean_search_batch"] = (after[1] - before[1]) / (after[0] -
                                                                                before[0])
                    result["rps_ratio"] = result["rps_2xx"] / base["rps_2xx"]
                    result["p99_ratio"] = (result["p99_ms"] / base["p99_ms"]
                                           if base["p99_ms"] else None)
                    result["meets_target"] = bool(result["rps_ratio"] >= 0.5
                                                  and (result["p99_ratio"] or 0) <= 3.0)
                    rows.append({"server": f"relrec {mode}", "request": "GET related",
                                 "connections": connections, **result})
            for name, script in (("POST /v1/related (50)", batch_lua),
                                 ("POST /v1/up-next (5)", upnext_lua)):
                for mode in ("precomputed", "index"):
                    result = wrk(servers[mode][1], script, args.connections[0], args.duration,
                                 args.threads)
                    rows.append({"server": f"relrec {mode}", "request": name,
                                 "connections": args.connections[0], **result})
            # hot reload under load: three reloads while wrk runs; nothing may be lost
            url = servers["precomputed"][1]
            reloads = []

            def reload_thrice():
                for _ in range(3):
                    time.sleep(args.duration / 4)
                    reloads.append(httpx.post(f"{url}/admin/reload", timeout=120,
                                              headers={"Authorization": f"Bearer {TOKEN}"}
                                              ).status_code)

            thread = threading.Thread(target=reload_thrice)
            thread.start()
            during = wrk(url, get_lua, args.connections[0], args.duration, args.threads)
            thread.join()
            checks["reload_under_load"] = {**during, "reload_status": reloads,
                                           "lost": during["non_2xx"] + during["socket_errors"]}
        finally:
            for process, _ in servers.values():
                stop(process)
            stop(bare)
    print(f"{'server':<20} {'request':<22} {'conn':>4} {'2xx req/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'rps/bare':>8} {'p99/bare':>8} {'batch':>6}")
    for row in rows:
        print(f"{row['server']:<20} {row['request']:<22} {row['connections']:>4} "
              f"{row['rps_2xx']:>10.0f} {row['p50_ms'] or 0:>8.2f} {row['p99_ms'] or 0:>8.2f} "
              f"{row.get('rps_ratio', float('nan')):>8.2f} "
              f"{row.get('p99_ratio') or float('nan'):>8.2f} "
              f"{row.get('mean_search_batch', float('nan')):>6.1f}")
    reload = checks["reload_under_load"]
    print(f"hot reload under load: reloads {reload['reload_status']}, "
          f"{reload['requests']} requests, lost {reload['lost']}")
    args.out.write_text(json.dumps({
        "date": str(date.today()), "run_dir": run_dir.name, "duration_s": args.duration,
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "machine": platform.machine(), "body_bytes": len(probe.content), "http": args.http,
        "rows": rows, "checks": checks}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
