"""The Codex provider: drives `codex app-server` over JSON-RPC on stdio (see CODEX.md)."""
