"""Hub secrets: values encrypted with age to the operators' public keys (fleet.yaml), stored next to the hub
files in communities/<community>/secrets/<hub>.yaml, decrypted only in memory at render/deploy time.
Fleet-level secrets (alert channels in fleet.yaml `monitoring.alerts`) live in secrets/fleet.yaml.

- `hubfleet.secrets.age`: the age primitives (pyrage): keys, identity files, encrypt/decrypt.
- `hubfleet.secrets.refs`: where a hub's settings reference secrets (`{secret: KEY}`).
- `hubfleet.secrets.store`: the secrets files, `SecretResolver`, `set_secret`, `rekey`, `keygen`.
"""
