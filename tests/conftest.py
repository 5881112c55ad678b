import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, 'tests', 'toy_main.py')


def run_toy(*opts, cwd=None, env_extra=None):
    env = dict(os.environ, NO_PROGRESS='1', OMP_NUM_THREADS='1')
    env.update(env_extra or {})
    return subprocess.run([sys.executable, TOY, '--opts', *opts], cwd=cwd or ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


@pytest.fixture
def toy():
    return run_toy
