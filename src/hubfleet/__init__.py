"""hubfleet: the control plane of a managed JupyterHub service."""

__version__ = "0.1.0"
