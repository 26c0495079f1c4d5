import pytest
from _fixture_run import make_run


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")
