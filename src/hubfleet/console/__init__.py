"""The daemon's HTTP app: /metrics, the web console and its JSON API (app.py); uvicorn on the daemon's
loop (server.py). Import the submodules directly: `hubfleet.console.accounts` needs no web stack."""
