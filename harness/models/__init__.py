"""The model registry, weight provisioning, the architecture adapter and the remote backend."""
