"""`hubfleet export`: standalone bundles. The local bundle is run for real with this venv's JupyterHub
(nothing new installed), from the bundle directory, with exactly the environment variables its README
names; the kubernetes bundle is checked for its files and commands (no cluster here)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from fleet_helpers import copy_demo_fleet, free_ports, hubfleet, kill_leftovers
from hubfleet.backup.dumps import copy_sqlite
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.export import HUB_PORT_ENV, PORT_ENV, PROXY_API_PORT_ENV, HubData, export_hub
from hubfleet.settings import UserError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "k8s-fleet"
BIN = Path(sys.executable).parent
STAGING = "communities/uni-a/hubs/staging.yaml"
K8S_SECRETS = ["physics-staging-secret-pw", "chem-staging-secret-pw", "lab-staging-secret-pw"]


def bundle_text(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(out.rglob("*")) if p.is_file())


@pytest.mark.integration
def test_local_bundle_runs_without_hubfleet(tmp_path: Path) -> None:
    fleet_dir = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    config = load_fleet(fleet_dir)
    out = tmp_path / "bundle"
    result = export_hub(config, config.hubs["uni-a-staging"], out)

    # branding/: the community's logo and page templates, where the config points (docs/branding.md)
    names = ["README.md", "branding", "jupyterhub_config.py", "requirements.txt"]
    assert sorted(p.name for p in out.iterdir()) == names
    text = bundle_text(out)
    assert "demo-staging" not in text  # the dummy password is named, never copied
    assert str(fleet_dir) not in text and ".hubfleet" not in text and str(BIN) not in text
    readme = (out / "README.md").read_text()
    for name in [*result.env_vars, HUB_PORT_ENV, PROXY_API_PORT_ENV]:
        assert name in readme
    assert ".venv/bin/pip install -r requirements.txt" in readme
    assert ".venv/bin/jupyterhub -f jupyterhub_config.py" in readme
    import jupyterhub

    assert f"jupyterhub=={jupyterhub.__version__}" in (out / "requirements.txt").read_text()

    port, hub_port, api_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFLEET_", "JUPYTERHUB_"))}
    values = {
        "HUBFLEET_CONTROL_TOKEN": secrets.token_hex(16),
        "HUBFLEET_OPERATOR_TOKEN": secrets.token_hex(16),
        "HUBFLEET_SECRET_DUMMY_PASSWORD": "a-password-of-our-own",
        PORT_ENV: str(port),
    }
    assert set(result.env_vars) == set(values)  # the README's variables, each given a value here
    env.update(values)
    env.update({HUB_PORT_ENV: str(hub_port), PROXY_API_PORT_ENV: str(api_port)})
    with running_bundle(out, env):
        # the control token from the environment works: the service exists with its scopes
        headers = {"Authorization": f"token {values['HUBFLEET_CONTROL_TOKEN']}"}
        reply = httpx.get(f"http://127.0.0.1:{port}/hub/api/users", headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text
        # the community's look comes along: its name on the login page, its logo at /hub/logo
        login = httpx.get(f"http://127.0.0.1:{port}/hub/login", timeout=10).text
        assert 'id="hubfleet-name" class="navbar-text fw-bold me-3">University A (staging)</span>' in login
        logo = httpx.get(f"http://127.0.0.1:{port}/hub/logo", timeout=10)
        assert logo.content == (fleet_dir / "communities/uni-a/logo.svg").read_bytes()
        # state lives next to the config
        assert (out / "jupyterhub.sqlite").exists() and (out / "jupyterhub_cookie_secret").exists()


def test_kubernetes_bundle(tmp_path: Path) -> None:
    config = load_fleet(FIXTURE)
    out = tmp_path / "bundle"
    export_hub(config, config.hubs["physics-staging"], out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "secret-values.example.yaml", "values.yaml"]
    text = bundle_text(out)
    for secret in K8S_SECRETS:
        assert secret not in text
    values = yaml.safe_load((out / "values.yaml").read_text())
    assert values["ingress"]["hosts"] == ["physics-staging.hubs.example.org"]
    example = yaml.safe_load((out / "secret-values.example.yaml").read_text())
    assert example["hub"]["config"]["DummyAuthenticator"]["password"] == "<set: dummy password>"
    assert example["hub"]["services"]["hubfleet"]["apiToken"].startswith("<set: hubfleet service token")
    readme = (out / "README.md").read_text()
    assert (
        "helm upgrade --install physics-staging jupyterhub --repo https://hub.jupyter.org/helm-chart/ "
        "--version 4.4.0 --namespace physics-staging --create-namespace -f values.yaml -f secret-values.yaml"
    ) in readme
    assert "kubectl -n physics-staging rollout status deployment/hub --timeout=300s" in readme
    assert "kubectl -n physics-staging rollout status deployment/proxy --timeout=300s" in readme


def test_export_refuses_non_empty_dir_unless_forced(tmp_path: Path) -> None:
    config = load_fleet(FIXTURE)
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not empty; .* or pass --force"):
        export_hub(config, config.hubs["bio"], out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    export_hub(config, config.hubs["bio"], out, force=True)
    assert (out / "values.yaml").exists() and (out / "mine.txt").read_text() == "keep me"


def test_cli_render_and_export(tmp_path: Path) -> None:
    rendered = hubfleet("render", "physics", fleet=FIXTURE, check=True).stdout
    assert rendered == (Path(__file__).parent / "golden" / "physics.yaml").read_text()
    staging = hubfleet("render", "lab-staging", fleet=FIXTURE, check=True).stdout
    assert "lab-staging-secret-pw" not in staging

    demo = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    local = hubfleet("render", "uni-a-staging", fleet=demo, check=True).stdout
    assert local.startswith("# Generated by hubfleet for hub 'uni-a-staging'")
    assert "c.JupyterHub.authenticator_class = 'dummy'" in local and "demo-staging" not in local

    out = tmp_path / "out"
    done = hubfleet("export", "chem-staging", "--out", str(out), fleet=FIXTURE, check=True)
    assert f"see {out / 'README.md'}" in done.stdout
    again = hubfleet("export", "chem-staging", "--out", str(out), fleet=FIXTURE)
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    missing = hubfleet("render", "physic", fleet=FIXTURE)
    assert missing.returncode == 1 and "did you mean 'physics'?" in missing.stderr


def test_export_of_oauth_hubs_names_the_client_secret(tmp_path: Path) -> None:
    """A kubernetes cilogon hub: the placeholder names the client secret, the README the callback URL;
    no secret value (the fixture's are encrypted) is in the bundle."""
    config = load_fleet(FIXTURE)
    out = tmp_path / "astro"
    export_hub(config, config.hubs["astro"], out)
    placeholders = yaml.safe_load((out / "secret-values.example.yaml").read_text())
    client = "cilogon:/client_id/4f1a9c2e7b"
    assert placeholders["hub"]["config"]["CILogonOAuthenticator"] == {
        "client_secret": f"<set: the client secret of the cilogon OAuth client `{client}`>"
    }
    readme = (out / "README.md").read_text()
    assert "Register `https://astro.hubs.example.org/hub/oauth_callback` as the callback" in readme
    for path in out.iterdir():
        assert "astro-test-client-secret" not in path.read_text()


@pytest.mark.integration
@pytest.mark.parametrize("value", [None, ""])
def test_local_bundle_refuses_to_start_without_its_secret(tmp_path: Path, value: str | None) -> None:
    """Fail closed: with the dummy password unset (or empty) the bundle's hub would let any password in, so
    the config stops JupyterHub before it listens, naming the variable."""
    fleet_dir = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    config = load_fleet(fleet_dir)
    out = tmp_path / "bundle"
    export_hub(config, config.hubs["uni-a-staging"], out)
    port, hub_port, api_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFLEET_", "JUPYTERHUB_"))}
    env.update(
        {
            "HUBFLEET_CONTROL_TOKEN": secrets.token_hex(16),
            "HUBFLEET_OPERATOR_TOKEN": secrets.token_hex(16),
            PORT_ENV: str(port),
            HUB_PORT_ENV: str(hub_port),
            PROXY_API_PORT_ENV: str(api_port),
        }
    )
    if value is not None:
        env["HUBFLEET_SECRET_DUMMY_PASSWORD"] = value
    done = subprocess.run(
        [str(BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "HUBFLEET_SECRET_DUMMY_PASSWORD (the dummy password users log in with) is not set" in output
    assert "README.md" in output
    assert not (out / "jupyterhub.sqlite").exists()  # stopped before it set anything up
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/hub/health", timeout=2)


@contextlib.contextmanager
def running_bundle(out: Path, env: dict[str, str]):  # noqa: ANN201 - Iterator[None]
    """The bundle's JupyterHub, from its directory, until the block ends; nothing of it left after."""
    log = (out / "hub.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
        cwd=out,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{env[PORT_ENV]}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (out / "hub.log").read_text()[-3000:]
            # health answers before JupyterHub has started its services; stopping it in between would
            # leave them behind, so wait for the line it logs once everything runs
            try:
                healthy = httpx.get(f"{url}/hub/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy and "JupyterHub is now running" in (out / "hub.log").read_text():
                break
            assert time.monotonic() < deadline, (out / "hub.log").read_text()[-3000:]
            time.sleep(0.3)
        yield
    finally:
        try:
            # JupyterHub stops its services (SIGINT, 10 s, SIGTERM, 5 s) and then the proxy: give it that
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        leftovers = kill_leftovers(out)  # the proxy runs in its own session
    assert leftovers == [], (out / "hub.log").read_text()[-3000:]


@pytest.mark.integration
def test_local_bundle_with_data_knows_its_users_and_their_files(tmp_path: Path) -> None:
    """`--with-data`: the hub's database (made here by JupyterHub's own ORM, as a hub that ran would have
    it) and its homes go into the bundle, which starts elsewhere, still knows the user, and starts their
    server in their home from the bundle, where their file is. The fleet's tokens and the records of
    servers running here are left out; a symlink in a home stays a link and is never followed."""
    from jupyterhub import orm

    fleet_dir = copy_demo_fleet(tmp_path / "fleet", keep={STAGING})
    config = load_fleet(fleet_dir)
    database, homes = tmp_path / "hub" / "jupyterhub.sqlite", tmp_path / "homes"
    database.parent.mkdir()
    session = orm.new_session_factory(f"sqlite:///{database}")()
    kim = orm.User(name="kim")
    session.add(kim)
    session.add(orm.User(name="hubfleet-check"))  # the fleet's synthetic check: not the community's
    session.add(orm.Service(name="hubfleet-operator"))
    session.add(orm.OAuthClient(identifier="jupyterhub"))
    session.commit()
    session.add(orm.Server(ip="127.0.0.1", port=1))
    session.commit()
    spawner = orm.Spawner(user=kim, name="", server=session.query(orm.Server).one(), state={"pid": 1})
    session.add(spawner)
    session.commit()
    operator = session.query(orm.Service).one()
    operator.new_api_token("fleet-operator-token-0123456789")
    session.close()
    (homes / "kim" / "work").mkdir(parents=True)
    (homes / "kim" / "work" / "notes.txt").write_text("kim's notes\n")
    (homes / "kim" / "outside").symlink_to("/etc")

    out = tmp_path / "bundle"
    result = export_hub(config, config.hubs["uni-a-staging"], out, data=HubData(database, homes, copy_sqlite))
    assert result.users == ["kim"]
    assert (out / "homes" / "kim" / "work" / "notes.txt").read_text() == "kim's notes\n"
    assert os.readlink(out / "homes" / "kim" / "outside") == "/etc"  # a link, not a copy of /etc
    copy = sqlite3.connect(out / "data" / "jupyterhub.sqlite")
    assert copy.execute("SELECT count(*) FROM api_tokens").fetchone() == (0,)
    assert copy.execute("SELECT count(*) FROM servers").fetchone() == (0,)
    copy.close()
    for path in out.rglob("*"):  # the dummy password is named, never copied
        assert path.is_symlink() or not path.is_file() or b"demo-staging" not in path.read_bytes()
    assert "'/data/jupyterhub.sqlite'" in (out / "jupyterhub_config.py").read_text()

    port, hub_port, api_port = free_ports(3)
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBFLEET_", "JUPYTERHUB_"))}
    env |= {
        "HUBFLEET_CONTROL_TOKEN": secrets.token_hex(16),
        "HUBFLEET_OPERATOR_TOKEN": token,
        "HUBFLEET_SECRET_DUMMY_PASSWORD": "a-password-of-our-own",
        PORT_ENV: str(port),
        HUB_PORT_ENV: str(hub_port),
        PROXY_API_PORT_ENV: str(api_port),
    }
    url = f"http://127.0.0.1:{port}"
    with (
        running_bundle(out, env),
        httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30) as client,
    ):
        assert client.get("/hub/api/users/kim").status_code == 200
        assert client.get("/hub/api/users/kim").json()["servers"] == {}  # none left from the old place
        client.post("/hub/api/users/kim/server")
        deadline = time.monotonic() + 90
        while not (client.get("/hub/api/users/kim").json()["servers"].get("") or {}).get("ready"):
            assert time.monotonic() < deadline, (out / "hub.log").read_text()[-3000:]
            time.sleep(0.3)
        reply = client.get("/user/kim/api/contents/work/notes.txt")
        assert reply.status_code == 200, reply.text
        assert reply.json()["content"] == "kim's notes\n"
        client.delete("/hub/api/users/kim/server")
