# ruff: noqa: E501
"""Fake kubectl, helm, gcloud, aws and az for the upgrade tests: no cluster and no cloud account exist here.

One Python script answers as all five (installed under each name in a directory put first on PATH). It keeps
the clusters' versions in a JSON state file, so an upgrade the fake `gcloud`/`aws`/`az` performs is what the
next `kubectl version` or node-pool listing reads, and a second CLI process (`--resume`) sees the same
cluster. The JSON shapes are those the CLIs document:
- `kubectl version -o json`: {"clientVersion": {...}, "serverVersion": {"major", "minor", "gitVersion"}}
  (kubernetes.io kubectl reference); `kubectl rollout status` prints `deployment "hub" successfully rolled
  out`; `kubectl get --raw .../services/proxy-public:http/proxy/hub/api/` answers what JupyterHub's REST API
  root answers, {"version": "5.3.0"} (JupyterHub REST API reference).
- `helm list -A -o json`: [{"name", "namespace", "revision", "updated", "status", "chart", "app_version"}];
  `helm template` runs the real helm ($FAKE_REAL_HELM) with the real chart.
- `gcloud container node-pools list --format json`: [{"name", "version", "status"}] (NodePool resource of the
  GKE API); `gcloud container clusters upgrade` prints its progress on stderr.
- `aws eks list-nodegroups` {"nodegroups": [...]}, `describe-nodegroup` {"nodegroup": {"nodegroupName",
  "version", "releaseVersion", "status"}}, `update-cluster-version` / `update-nodegroup-version`
  {"update": {"id", "status": "InProgress", "type": "VersionUpdate", "params", "createdAt", "errors"}}
  (EKS API reference); `update-cluster-version` refuses while a node group runs another version, as EKS does
  (InvalidParameterException), and a skipped minor version.
- `az aks show` {"name", "location", "kubernetesVersion", "currentKubernetesVersion"}, `az aks nodepool
  list` [{"name", "orchestratorVersion", "currentOrchestratorVersion", "provisioningState", "mode"}]
  (Azure CLI reference); `az aks upgrade` refuses a skipped minor version as AKS does.

Failures on demand: $FAKE_FAIL (a substring of the command line: every such command fails while it is set), $FAKE_HUB_DOWN (comma-separated hubs whose API does not answer through the proxy).
Every call is appended to $FAKE_LOG as JSON.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REAL_HELM = REPO / ".cache" / "helm" / "helm"
CHARTS = REPO.parent / "shared" / "charts"

SCRIPT = r"""#!{python}
import json, os, sys, subprocess, uuid
NAME = {name!r}
argv = sys.argv[1:]
state_path = os.environ["FAKE_CLOUD_STATE"]
state = json.load(open(state_path))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": [NAME, *argv], "KUBECONFIG": os.environ.get("KUBECONFIG")}}) + "\n")
line = " ".join([NAME, *argv])
fail = os.environ.get("FAKE_FAIL", "")
if fail and fail in line:
    print(f"ERROR: (fake {{NAME}}) the operation failed: quota exceeded", file=sys.stderr)
    sys.exit(1)

def save():
    json.dump(state, open(state_path, "w"), indent=2)

def opt(flag):
    return argv[argv.index(flag) + 1] if flag in argv else None

def minor(v):
    return int(v.lstrip("v").split(".")[1])

def by(key, value):
    for name, c in state["clusters"].items():
        if c.get(key) == value:
            return name, c
    print(f"ERROR: no cluster {{value}}", file=sys.stderr)
    sys.exit(1)

def write_kubeconfig(path):
    open(path, "w").write("apiVersion: v1\nkind: Config\n")

def patch(c, version):
    return f"{{version}}.{{c.get('patch', '4')}}{{c.get('suffix', '')}}"

if NAME == "kubectl":
    ctx = opt("--context")
    name, c = by("context", ctx)
    if argv[:1] == ["version"]:
        cp = c["control_plane"]
        print(json.dumps({{"clientVersion": {{"major": "1", "minor": "33", "gitVersion": "v1.33.1"}},
                          "serverVersion": {{"major": "1", "minor": str(minor(cp)), "gitVersion": "v" + cp}}}}))
    elif argv[:2] == ["get", "nodes"]:
        print(json.dumps({{"apiVersion": "v1", "kind": "List", "items": [
            {{"metadata": {{"name": f"{{p}}-node-1", "labels": {{"node.kubernetes.io/pool": p}}}},
              "status": {{"nodeInfo": {{"kubeletVersion": "v" + v}}}}}} for p, v in c["pools"].items()]}}))
    elif "rollout" in argv:
        print(f'deployment "{{argv[argv.index("status") + 1].split("/")[1]}}" successfully rolled out')
    elif "--raw" in argv:
        path = argv[argv.index("--raw") + 1]
        hub = path.split("/namespaces/")[1].split("/")[0]
        if hub in os.environ.get("FAKE_HUB_DOWN", "").split(","):
            print('Error from server (ServiceUnavailable): the server is currently unable to handle the request', file=sys.stderr)
            sys.exit(1)
        print(json.dumps({{"version": "5.3.0"}}))
    else:
        print(f"fake kubectl: unexpected {{argv}}", file=sys.stderr); sys.exit(2)
elif NAME == "helm":
    if argv[:1] == ["template"]:
        os.execv(os.environ["FAKE_REAL_HELM"], [os.environ["FAKE_REAL_HELM"], *argv])
    if argv[:1] == ["list"]:
        name, c = by("context", opt("--kube-context"))
        print(json.dumps([{{"name": r, "namespace": r, "revision": "3", "updated": "2026-11-01 10:00:00.0 +0000 UTC",
                            "status": "deployed", "chart": "jupyterhub-" + v, "app_version": "5.3.0"}}
                          for r, v in c.get("releases", {{}}).items()]))
    else:
        print(f"fake helm: unexpected {{argv}}", file=sys.stderr); sys.exit(2)
elif NAME == "gcloud":
    if argv[:3] == ["container", "clusters", "get-credentials"]:
        write_kubeconfig(os.environ["KUBECONFIG"])
    elif argv[:3] == ["container", "node-pools", "list"]:
        name, c = by("provider_name", opt("--cluster"))
        print(json.dumps([{{"name": p, "version": v, "status": "RUNNING"}} for p, v in c["pools"].items()]))
    elif argv[:3] == ["container", "clusters", "upgrade"]:
        name, c = by("provider_name", argv[3])
        version = opt("--cluster-version")
        if "--master" in argv:
            if minor(version) != minor(c["control_plane"]) + 1:
                print("ERROR: (gcloud.container.clusters.upgrade) ResponseError: code=400, message=Master cannot be upgraded more than one minor version", file=sys.stderr); sys.exit(1)
            c["control_plane"] = patch(c, version)
            print(f"Upgrading {{argv[3]}}...done.", file=sys.stderr)
        else:
            pool = opt("--node-pool")
            if minor(version) > minor(c["control_plane"]):
                print("ERROR: node version newer than master", file=sys.stderr); sys.exit(1)
            c["pools"][pool] = patch(c, version)
            print(f"Upgrading {{argv[3]}}, node pool {{pool}}...done.", file=sys.stderr)
        save()
    else:
        print(f"fake gcloud: unexpected {{argv}}", file=sys.stderr); sys.exit(2)
elif NAME == "aws":
    if argv[:2] == ["sts", "get-caller-identity"]:
        print(os.environ.get("FAKE_AWS_ACCOUNT", "123456789012"))
    elif argv[:2] == ["eks", "update-kubeconfig"]:
        write_kubeconfig(os.environ["KUBECONFIG"])
    elif argv[:2] == ["eks", "list-nodegroups"]:
        name, c = by("provider_name", opt("--cluster-name"))
        print(json.dumps({{"nodegroups": list(c["pools"])}}))
    elif argv[:2] == ["eks", "describe-nodegroup"]:
        name, c = by("provider_name", opt("--cluster-name"))
        ng = opt("--nodegroup-name")
        v = c["pools"][ng]
        print(json.dumps({{"nodegroup": {{"nodegroupName": ng, "version": ".".join(v.split(".")[:2]),
                                         "releaseVersion": v + "-20251101", "status": "ACTIVE"}}}}))
    elif argv[:2] in (["eks", "update-cluster-version"], ["eks", "update-nodegroup-version"]):
        cluster_flag = "--name" if argv[1] == "update-cluster-version" else "--cluster-name"
        name, c = by("provider_name", opt(cluster_flag))
        version = opt("--kubernetes-version")
        if argv[1] == "update-cluster-version":
            behind = [p for p, v in c["pools"].items() if minor(v) != minor(c["control_plane"])]
            if behind or minor(version) != minor(c["control_plane"]) + 1:
                print(f"An error occurred (InvalidParameterException) when calling the UpdateClusterVersion operation: "
                      f"Nodegroups {{behind}} must be updated to match cluster version before updating cluster version",
                      file=sys.stderr); sys.exit(254)
            c["control_plane"] = patch(c, version)
        else:
            c["pools"][opt("--nodegroup-name")] = patch(c, version)
        save()
        print(json.dumps({{"update": {{"id": str(uuid.uuid4()), "status": "InProgress", "type": "VersionUpdate",
                                      "params": [{{"type": "Version", "value": version}}],
                                      "createdAt": "2026-11-30T12:00:00+00:00", "errors": []}}}}))
    elif argv[:2] == ["eks", "wait"]:
        pass
    else:
        print(f"fake aws: unexpected {{argv}}", file=sys.stderr); sys.exit(2)
elif NAME == "az":
    if argv[:2] == ["aks", "get-credentials"]:
        write_kubeconfig(opt("--file"))
    elif argv[:2] == ["aks", "show"]:
        name, c = by("provider_name", opt("--name"))
        print(json.dumps({{"name": opt("--name"), "location": "westeurope",
                          "kubernetesVersion": c["control_plane"], "currentKubernetesVersion": c["control_plane"]}}))
    elif argv[:3] == ["aks", "nodepool", "list"]:
        name, c = by("provider_name", opt("--cluster-name"))
        print(json.dumps([{{"name": p, "orchestratorVersion": v, "currentOrchestratorVersion": v,
                           "provisioningState": "Succeeded", "mode": "System"}} for p, v in c["pools"].items()]))
    elif argv[:2] == ["aks", "upgrade"]:
        name, c = by("provider_name", opt("--name"))
        version = opt("--kubernetes-version")
        if minor(version) != minor(c["control_plane"]) + 1:
            print("(OperationNotAllowed) Upgrading Kubernetes version is not allowed since minor version skipping", file=sys.stderr); sys.exit(1)
        c["control_plane"] = patch(c, version)
        save()
        print(json.dumps({{"name": opt("--name"), "kubernetesVersion": c["control_plane"], "provisioningState": "Succeeded"}}))
    elif argv[:3] == ["aks", "nodepool", "upgrade"]:
        name, c = by("provider_name", opt("--cluster-name"))
        version = opt("--kubernetes-version")
        c["pools"][opt("--name")] = patch(c, version)
        save()
        print(json.dumps({{"name": opt("--name"), "orchestratorVersion": c["pools"][opt("--name")], "provisioningState": "Succeeded"}}))
    else:
        print(f"fake az: unexpected {{argv}}", file=sys.stderr); sys.exit(2)
"""

# The k8s-fleet fixture's clusters at different versions on 2026-11-30: EKS 1.32 (standard support ended
# 2026-03-23: in paid extended support), GKE 1.32, AKS 1.33.
DEFAULT_STATE: dict[str, Any] = {
    "clusters": {
        "eks": {
            "context": "arn:aws:eks:us-west-2:123456789012:cluster/fleet-two",
            "provider_name": "fleet-two",
            "control_plane": "1.32.5-eks-5da6378",
            "pools": {"users": "1.31.9", "core": "1.32.5"},
            "releases": {"astro": "4.4.0", "bio": "4.4.0", "bio-staging": "4.4.0"},
            "suffix": "-eks-5da6378",
        },
        "gke": {
            "context": "gke_hubfleet-demo_europe-west1-b_fleet-one",
            "provider_name": "fleet-one",
            "control_plane": "1.32.4-gke.1106006",
            "pools": {"default-pool": "1.32.4-gke.1106006", "user-pool": "1.31.6-gke.1020000"},
            "releases": {"physics": "4.4.0", "physics-staging": "4.4.0"},
            "suffix": "-gke.1106006",
        },
        "aks": {
            "context": "fleet-three",
            "provider_name": "fleet-three",
            "control_plane": "1.33.2",
            "pools": {"system": "1.33.2", "user": "1.32.6"},
            "releases": {"chem-staging": "4.3.5"},
        },
        "kube": {
            "context": "research",
            "provider_name": "research",
            "control_plane": "1.30.2",
            "pools": {"workers": "1.29.5"},
            "releases": {"lab": "4.4.0", "lab-staging": "4.4.0"},
        },
    }
}


def install(
    bin_dir: Path, state_file: Path, log: Path, state: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write the fakes into `bin_dir` and the state file; returns the environment the CLI needs."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("kubectl", "helm", "gcloud", "aws", "az"):
        path = bin_dir / name
        path.write_text(SCRIPT.format(python=sys.executable, name=name))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    state_file.write_text(json.dumps(state or DEFAULT_STATE, indent=2))
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FAKE_CLOUD_STATE": str(state_file),
        "FAKE_LOG": str(log),
        "FAKE_REAL_HELM": str(REAL_HELM),
    }


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]
