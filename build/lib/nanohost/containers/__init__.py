"""Containers: the agent image, the backend that runs containers, and the mount policy."""
