"""Validation time for a generated 500-hub fleet (250 communities x staging + prod); prints JSON.

Not part of the test suite. Target: under 0.5 s (best of 5 runs of load_fleet).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from hubfleet.config.validate import load_fleet

COMMUNITIES = 250
RUNS = 5
TARGET_SECONDS = 0.5


def generate(root: Path, communities: int = COMMUNITIES) -> Path:
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(
        "name: bench\noperators:\n  - name: Ada\n    email: ada@example.org\n"
        "defaults:\n  resources:\n    memory_limit: 1G\n    cpu_limit: 1\n  culling:\n    timeout: 3600\n"
    )
    (root / "clusters" / "local.yaml").write_text("name: local\nkind: local\n")
    port = 20000
    for i in range(communities):
        name = f"c{i:03d}"
        hubs = root / "communities" / name / "hubs"
        hubs.mkdir(parents=True)
        (root / "communities" / name / "community.yaml").write_text(
            f"name: {name}\ndisplay_name: Community {i}\ncontacts:\n"
            f"  - name: Lead {i}\n    email: lead{i}@example.org\n    role: teacher\n"
        )
        for stage, auth in (("staging", "dummy"), ("prod", "native")):
            port += 1
            hub = name if stage == "prod" else f"{name}-staging"
            (hubs / f"{stage}.yaml").write_text(
                f"name: {hub}\ndisplay_name: Hub {hub}\ncommunity: {name}\ncluster: local\n"
                f"stage: {stage}\nport: {port}\nauth:\n  type: {auth}\n  admin_users: [lead{i}]\n"
                "max_users: 50\nresources:\n  memory_limit: 2G\n"
            )
    return root


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "fleet")
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            config = load_fleet(root)
            times.append(time.perf_counter() - start)
        json.dump(
            {"hubs": len(config.hubs), "seconds": round(min(times), 4), "target_seconds": TARGET_SECONDS},
            sys.stdout,
        )
        print()


if __name__ == "__main__":
    main()
