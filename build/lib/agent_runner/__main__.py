"""`python -m agent_runner`: the container's entrypoint."""

from agent_runner.main import main

main()
