"""A database per user on Kubernetes: a postgres sidecar in the user pod, on a volume of its own per user.

- The sidecar runs the hub's pinned `user_database.image`, listening on 127.0.0.1 only
  (`-c listen_addresses=127.0.0.1`), with requests and limits.
- POSTGRES_HOST_AUTH_METHOD=trust: acceptable only because the server listens on the pod's loopback, which
  only the pod's own containers share (the user's server and the sidecar); no other pod, user or the hub can
  reach 127.0.0.1 of this pod. So there is no password anywhere: not in the values, the hub's config or logs.
- Its data is on a per-user PVC `db-{username}`, mounted in the sidecar only. KubeSpawner creates only the
  home PVC, so a `pre_spawn_hook` (hub.extraConfig) creates this one before the spawn with KubeSpawner's
  own API client and `make_pvc`, and tolerates "already exists" (409) as KubeSpawner does for the home PVC;
  the PVC is never deleted by hubfleet when the server stops, so the data stays across restarts.
- The user's server gets DATABASE_URL and the PG* variables pointing at 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from hubfleet.config.models_environments import UserDatabase

CONTAINER = "postgres"
VOLUME = "hubfleet-user-db"
PVC_NAME_TEMPLATE = "db-{username}"
DATA_MOUNT = "/var/lib/postgresql/data"
ROLE = "jovyan"
"""The database and its role inside each user's own server (every pod has its own server, so one name)."""
PORT = 5432
CPU_REQUEST = 0.05
"""Cores the sidecar requests (an idle database needs little; its limit is `cpu_limit`)."""
HOOK_KEY = "hubfleet-20-user-database"

HOOK = '''\
def _hubfleet_user_database_hook(name_template={name_template!r}, storage={storage!r}):
    """pre_spawn_hook: the user's database volume (PVC) exists before the pod does. KubeSpawner creates only
    the home PVC; this one is made with KubeSpawner's own API client and make_pvc, once: 409 (it exists) is
    fine, as is 403 when it exists (a quota counts before existence). An earlier pre_spawn_hook still runs."""
    import inspect

    from kubernetes_asyncio.client.rest import ApiException
    from kubespawner.objects import make_pvc

    previous = c.KubeSpawner.get('pre_spawn_hook') or c.Spawner.get('pre_spawn_hook')

    async def hook(spawner):
        if previous is not None:
            result = previous(spawner)
            if inspect.isawaitable(result):
                await result
        name = spawner._expand_user_properties(name_template)
        pvc = make_pvc(
            name=name,
            storage_class=spawner.storage_class,
            access_modes=['ReadWriteOnce'],
            selector=None,
            storage=storage,
            labels=spawner._build_common_labels({{'component': 'hubfleet-user-database'}}),
            annotations={{}},
        )
        try:
            await spawner.api.create_namespaced_persistent_volume_claim(namespace=spawner.namespace, body=pvc)
            spawner.log.info('hubfleet: created the database volume %s of %s', name, spawner.user.name)
        except ApiException as exc:
            if exc.status == 403:
                namespace = spawner.namespace
                await spawner.api.read_namespaced_persistent_volume_claim(name=name, namespace=namespace)
            elif exc.status != 409:
                raise
            spawner.log.info('hubfleet: the database volume %s of %s exists', name, spawner.user.name)

    return hook


c.KubeSpawner.pre_spawn_hook = _hubfleet_user_database_hook()
'''


def hook_code(database: UserDatabase) -> str:
    return HOOK.format(name_template=PVC_NAME_TEMPLATE, storage=database.storage)


def sidecar(database: UserDatabase) -> dict[str, Any]:
    """The postgres container beside the user's server."""
    limits: dict[str, Any] = {"memory": database.memory_limit}
    requests: dict[str, Any] = {"memory": database.memory_limit, "cpu": CPU_REQUEST}
    if database.cpu_limit is not None:
        limits["cpu"] = database.cpu_limit
        requests["cpu"] = min(CPU_REQUEST, database.cpu_limit)  # a request may not exceed its limit
    return {
        "name": CONTAINER,
        "image": database.image,
        "args": ["-c", "listen_addresses=127.0.0.1"],
        "env": [
            # trust: the server listens on the pod's loopback only, shared by this pod's containers alone
            {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"},
            {"name": "POSTGRES_USER", "value": ROLE},
            {"name": "POSTGRES_DB", "value": ROLE},
            {"name": "PGDATA", "value": f"{DATA_MOUNT}/pgdata"},
        ],
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": VOLUME, "mountPath": DATA_MOUNT}],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", ROLE]},
            "periodSeconds": 5,
        },
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def user_env() -> dict[str, str]:
    """What the user's server gets: libpq's variables and DATABASE_URL, no password (trust on loopback)."""
    return {
        "DATABASE_URL": f"postgresql://{ROLE}@127.0.0.1:{PORT}/{ROLE}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(PORT),
        "PGUSER": ROLE,
        "PGDATABASE": ROLE,
    }


def volume() -> dict[str, Any]:
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": PVC_NAME_TEMPLATE}}
