"""`hubfleet init`: a new fleet repository (fleet files, secrets set-up, editor and pre-commit settings, CI).

- `hubfleet.scaffold.scaffold`: `scaffold(target, cluster=..., ...)` writes the files from templates/.
- `hubfleet.scaffold.ci`: the CI files of a cluster kind, from `ci_github` (GitHub Actions) and `ci_gitlab`
  (GitLab CI).
"""

from hubfleet.scaffold.scaffold import CLUSTER_KINDS, ScaffoldResult, scaffold

__all__ = ["CLUSTER_KINDS", "ScaffoldResult", "scaffold"]
