"""The OpenCode provider's runner side (``opencode serve`` over HTTP; see provider.py)."""
