"""The daemon's HTTP app (FastAPI): /metrics now, the web console later; uvicorn on the daemon's loop."""

from hubfleet.console.app import create_app
from hubfleet.console.server import ConsoleServer, start_console

__all__ = ["ConsoleServer", "create_app", "start_console"]
