from tests.fakes.model_server import model_server  # noqa: F401  (fixture)
from tests.runner.conftest import harness, runner_options  # noqa: F401  (fixtures: the runner loop over the real transport)
from tests.support.opencode_bin import opencode_bin  # noqa: F401  (fixture)
