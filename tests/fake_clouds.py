"""Fake kubectl, helm, gcloud, aws and az for the cluster inventory tests (no Kubernetes API server or cloud
account exists on these machines).

One Python script is installed under each name in a bin directory; it answers from a scenario (JSON in
$FAKE_CLOUDS) with the JSON shapes the real tools document:

- `kubectl version -o json`: {"clientVersion": {...}, "serverVersion": {"major", "minor", "gitVersion", ...}}
  (kubernetes.io/docs/reference/kubectl/generated/kubectl_version); EKS reports minor "32+".
- `kubectl get nodes -o json`: a v1 NodeList, `status.nodeInfo.kubeletVersion` and pool labels.
- `helm list -A -o json`: [{"name", "namespace", "revision", "updated", "status", "chart", "app_version"}]
  (helm.sh/docs/helm/helm_list), chart as "jupyterhub-4.4.0".
- `gcloud container node-pools list --format json`: [NodePool] with "name", "version", "config", "status"
  (cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters.nodePools).
- `aws eks list-nodegroups`: {"nodegroups": [...]}; `aws eks describe-nodegroup`: {"nodegroup": {
  "nodegroupName", "clusterName", "version", "releaseVersion", "status", ...}} (AWS CLI eks reference).
- `az aks show -o json`: ManagedCluster with "location", "kubernetesVersion", "currentKubernetesVersion";
  `az aks nodepool list -o json`: [AgentPool] with "name", "orchestratorVersion",
  "currentOrchestratorVersion" (learn.microsoft.com/cli/azure/aks/nodepool).
- the credential commands (`gcloud container clusters get-credentials`, `aws eks update-kubeconfig`,
  `aws sts get-caller-identity`, `az aks get-credentials --file`) write a kubeconfig / print the account.

Every call is appended to $FAKE_LOG. $FAKE_FAIL (a substring of the command line) makes the matching call
exit 1 with the tool's kind of error; $FAKE_GARBAGE makes it print something that is not JSON.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

TOOLS = ("kubectl", "helm", "gcloud", "aws", "az")

SCRIPT = r"""#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
argv = sys.argv[1:]
line = " ".join([name, *argv])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"argv": [name, *argv], "KUBECONFIG": os.environ.get("KUBECONFIG")}}) + "\n")
scenario = json.load(open(os.environ["FAKE_CLOUDS"]))

def opt(flag):
    return argv[argv.index(flag) + 1] if flag in argv else None

def out(data):
    print(json.dumps(data, indent=2))
    sys.exit(0)

fail = os.environ.get("FAKE_FAIL", "")
if fail and fail in line:
    errors = {{
        "gcloud": "ERROR: (gcloud.container.node-pools.list) You do not currently have an active account "
        "selected.",
        "aws": "An error occurred (AccessDeniedException) when calling the ListNodegroups operation: denied",
        "az": "ERROR: Please run 'az login' to setup account.",
        "kubectl": "error: You must be logged in to the server (Unauthorized)",
        "helm": "Error: Kubernetes cluster unreachable: the server has asked for the client to provide "
        "credentials",
    }}
    print(errors[name], file=sys.stderr)
    sys.exit(1)
garbage = os.environ.get("FAKE_GARBAGE", "")
if garbage and garbage in line:
    print("<html><body>Service Unavailable</body></html>")
    sys.exit(0)

context = opt("--context") or opt("--kube-context")
if name == "kubectl" and argv[:1] == ["version"]:
    git = scenario["contexts"][context]["server"]
    major, minor = git.lstrip("v").split(".")[:2]
    plus = "+" if "-eks-" in git else ""
    out({{
        "clientVersion": {{"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"}},
        "kustomizeVersion": "v5.7.1",
        "serverVersion": {{
            "major": major, "minor": minor + plus, "gitVersion": git, "platform": "linux/amd64",
        }},
    }})
if name == "kubectl" and argv[:2] == ["get", "nodes"]:
    items = []
    for node in scenario["contexts"][context]["nodes"]:
        items.append({{
            "apiVersion": "v1", "kind": "Node",
            "metadata": {{"name": node["name"], "labels": node.get("labels", {{}})}},
            "status": {{"nodeInfo": {{"kubeletVersion": node["kubelet"], "containerRuntimeVersion": "containerd://1.7.27"}}}},
        }})
    out({{"apiVersion": "v1", "kind": "List", "items": items, "metadata": {{"resourceVersion": ""}}}})
if name == "helm" and argv[:1] == ["list"]:
    releases = scenario["contexts"][context]["releases"]
    out([{{
        "name": hub, "namespace": hub, "revision": "3", "updated": "2026-11-02 10:00:00.000000 +0000 UTC",
        "status": "deployed", "chart": chart, "app_version": "5.5.0",
    }} for hub, chart in releases.items()])
if name == "gcloud" and argv[:3] == ["container", "clusters", "get-credentials"]:
    open(os.environ["KUBECONFIG"], "w").write("apiVersion: v1\n")
    sys.exit(0)
if name == "gcloud" and argv[:3] == ["container", "node-pools", "list"]:
    pools = scenario["gke"][opt("--cluster")]
    out([{{
        "name": pool, "version": version, "status": "RUNNING",
        "config": {{"machineType": "e2-standard-4", "imageType": "COS_CONTAINERD", "diskSizeGb": 100}},
        "initialNodeCount": 1, "locations": [opt("--zone")],
    }} for pool, version in pools.items()])
if name == "aws" and argv[:2] == ["sts", "get-caller-identity"]:
    print("123456789012")
    sys.exit(0)
if name == "aws" and argv[:2] == ["eks", "update-kubeconfig"]:
    open(os.environ["KUBECONFIG"], "w").write("apiVersion: v1\n")
    sys.exit(0)
if name == "aws" and argv[:2] == ["eks", "list-nodegroups"]:
    out({{"nodegroups": sorted(scenario["eks"][opt("--cluster-name")])}})
if name == "aws" and argv[:2] == ["eks", "describe-nodegroup"]:
    group = opt("--nodegroup-name")
    version = scenario["eks"][opt("--cluster-name")][group]
    out({{"nodegroup": {{
        "nodegroupName": group, "clusterName": opt("--cluster-name"), "version": version,
        "releaseVersion": version + ".0-20261101", "status": "ACTIVE", "capacityType": "ON_DEMAND",
        "scalingConfig": {{"minSize": 1, "maxSize": 3, "desiredSize": 2}},
    }}}})
if name == "az" and argv[:2] == ["aks", "get-credentials"]:
    open(opt("--file"), "w").write("apiVersion: v1\n")
    sys.exit(0)
if name == "az" and argv[:2] == ["aks", "show"]:
    aks = scenario["aks"][opt("--name")]
    out({{"name": opt("--name"), "location": aks["location"], "kubernetesVersion": aks["server"],
          "currentKubernetesVersion": aks["server"], "provisioningState": "Succeeded"}})
if name == "az" and argv[:3] == ["aks", "nodepool", "list"]:
    pools = scenario["aks"][opt("--cluster-name")]["pools"]
    out([{{"name": pool, "orchestratorVersion": version, "currentOrchestratorVersion": version,
           "mode": "System", "count": 2}} for pool, version in pools.items()])
print(f"{{name}}: fake does not know: {{line}}", file=sys.stderr)
sys.exit(2)
"""

GKE_CONTEXT = "gke_hubfleet-demo_europe-west1-b_fleet-one"
EKS_CONTEXT = "arn:aws:eks:us-west-2:123456789012:cluster/fleet-two"
AKS_CONTEXT = "fleet-three"
KUBE_CONTEXT = "research"


def k8s_fleet_scenario() -> dict[str, Any]:
    """tests/fixtures/k8s-fleet at different versions: EKS 1.32 (past end of standard support, in paid
    extended support, a node group four minors behind), GKE 1.35 (standard support), AKS 1.27 (past even
    LTS; its hub's chart 4.3.5 needs 1.28+), a kubeconfig cluster at 1.30 whose nodes carry pool labels."""
    return {
        "contexts": {
            GKE_CONTEXT: {
                "server": "v1.35.2-gke.1485000",
                "releases": {"physics": "jupyterhub-4.4.0", "physics-staging": "jupyterhub-4.4.0"},
            },
            EKS_CONTEXT: {
                "server": "v1.32.9-eks-113cf36",
                "releases": {
                    "astro": "jupyterhub-4.4.0",
                    "astro-staging": "jupyterhub-4.4.0",
                    "bio": "jupyterhub-4.3.5",
                    "bio-staging": "jupyterhub-4.4.0",
                    "ingress-nginx": "ingress-nginx-4.11.3",
                },
            },
            AKS_CONTEXT: {"server": "v1.27.9", "releases": {"chem-staging": "jupyterhub-4.3.5"}},
            KUBE_CONTEXT: {
                "server": "v1.30.14",
                "releases": {"lab": "jupyterhub-4.4.0", "lab-staging": "jupyterhub-4.4.0"},
                "nodes": [
                    {"name": "n1", "kubelet": "v1.30.14", "labels": {"node.kubernetes.io/pool": "core"}},
                    {"name": "n2", "kubelet": "v1.29.15", "labels": {"node.kubernetes.io/pool": "core"}},
                    {"name": "n3", "kubelet": "v1.30.14", "labels": {"karpenter.sh/nodepool": "users"}},
                ],
            },
        },
        "gke": {"fleet-one": {"default-pool": "1.35.2-gke.1485000", "highmem": "1.34.7-gke.1000000"}},
        "eks": {"fleet-two": {"general": "1.32", "gpu": "1.28"}},
        "aks": {
            "fleet-three": {"location": "westeurope", "server": "1.27.9", "pools": {"nodepool1": "1.27.9"}}
        },
    }


def install(bin_dir: Path, scenario: dict[str, Any], log: Path) -> dict[str, str]:
    """Write the fake tools into `bin_dir` and the scenario beside them; returns the environment to use
    (PATH holding only the fakes, FAKE_CLOUDS, FAKE_LOG)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    text = SCRIPT.format(python=sys.executable)
    for name in TOOLS:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    scenario_file = bin_dir.parent / "scenario.json"
    scenario_file.write_text(json.dumps(scenario))
    return {"PATH": str(bin_dir), "FAKE_CLOUDS": str(scenario_file), "FAKE_LOG": str(log)}


def calls(log: Path) -> list[list[str]]:
    """The argv of every call the fakes answered, in order."""
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]
