"""Hub secrets: values encrypted with age to the operators' public keys (fleet.yaml), stored next to the hub
files in communities/<community>/secrets/<hub>.yaml, decrypted only in memory at render/deploy time.
Fleet-level secrets (alert channels in fleet.yaml `monitoring.alerts`) live in secrets/fleet.yaml.

- `hubfleet.secrets.age`: the age primitives (pyrage): keys, identity files, encrypt/decrypt.
- `hubfleet.secrets.store`: the commands on the secrets files (`set_secret`, `rekey`, `keygen`...) and
  `SecretResolver`, which decrypts for render/deploy.

What needs no key lives in `hubfleet.config`, below this package: the file format (`config.secrets_file`,
read by validation and written by the store) and the `{secret: KEY}` references (`config.secret_refs`).
"""
