"""Entry point of the detached daemon started by `hubfleet up --detach`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hubfleet.config.loader import load_fleet
from hubfleet.daemon.run import run_foreground
from hubfleet.settings import UserError


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hubfleet.daemon")
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_foreground(load_fleet(args.fleet), args.state_dir)
    except UserError as exc:  # e.g. the metrics port is taken: one line in daemon.log, not a traceback
        logging.getLogger("hubfleet.daemon").error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
