"""`python -m agent_runner`: the container's entrypoint."""

from agent_runner import phases

phases.start()

from agent_runner.main import main  # noqa: E402 - after the first mark, so the import is timed

main()
