"""nanohost: a self-hosted chat-platform bot host with one agent container per chat group."""

__version__ = "0.1.0"
