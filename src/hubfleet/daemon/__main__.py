"""Entry point of the detached daemon started by `hubfleet up --detach`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hubfleet.config.loader import load_fleet
from hubfleet.daemon.run import run_foreground


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hubfleet.daemon")
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_foreground(load_fleet(args.fleet), args.state_dir)


if __name__ == "__main__":
    main()
