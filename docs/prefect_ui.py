"""Screenshots of the Prefect UI with the bar deployments and a flow run (docs/prefect-*.png).

    python docs/prefect_ui.py --root /path/to/a/bar/repo [TARGET ...]     # needs /usr/bin/chromium

Starts `prefect server start` on 127.0.0.1 with a fresh PREFECT_HOME, registers the
deployments of flows/serve.py, runs the `bar-pipeline` flow once against that server (on an
up-to-date repository this takes seconds: every stage is skipped), then has headless
Chromium capture the deployments page and the flow run page.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"{url} did not answer within {seconds:.0f} s") from None
            time.sleep(1)


def screenshot(url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "/usr/bin/chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1400,850",
                "--virtual-time-budget=15000",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a bar repository (ideally up to date)")
    parser.add_argument("targets", nargs="*", help="stages the flow run brings up to date (default: all)")
    args = parser.parse_args()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "PREFECT_HOME": home,
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": api,
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait(f"{api}/health")
            register = "import sys; from flows.serve import deployments; [d.apply() for d in deployments(sys.argv[1])]"
            subprocess.run([sys.executable, "-c", register, str(args.root)], env=env, check=True, cwd=ROOT)
            subprocess.run(
                [sys.executable, "-m", "flows.pipeline", "--root", str(args.root), *args.targets],
                env=env,
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
            body = json.dumps(
                {
                    "limit": 1,
                    "sort": "START_TIME_DESC",  # the run just made, not a scheduled one
                    "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                }
            ).encode()
            request = urllib.request.Request(
                f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
            )
            run_id = json.loads(urllib.request.urlopen(request).read())[0]["id"]
            docs = ROOT / "docs"
            screenshot(f"http://127.0.0.1:{port}/deployments", docs / "prefect-deployments.png")
            screenshot(f"http://127.0.0.1:{port}/runs/flow-run/{run_id}", docs / "prefect-flow-run.png")
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
