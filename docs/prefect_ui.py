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
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.common: the throw-away Prefect server


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
    from benchmarks.common import prefect_server

    with prefect_server(seconds=120) as (api, env):
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
        ui = api.removesuffix("/api")
        screenshot(f"{ui}/deployments", docs / "prefect-deployments.png")
        screenshot(f"{ui}/runs/flow-run/{run_id}", docs / "prefect-flow-run.png")


if __name__ == "__main__":
    main()
