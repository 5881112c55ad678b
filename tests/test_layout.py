"""CONVENTIONS.md layout rules for every paper folder present, checked in subprocesses."""
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

PAPERS = ['ressl', 'wcl', 'simmatch', 'lewel', 'kshot_nas', 'bcnet', 'cafenet', 'mctnas', 'vitas', 'entrannas',
          'toponas', 'dist_kd', 'maskd', 'dyrep', 'lightvit', 'greenmim', 'ipt', 'taylorsenet']
PRESENT = [p for p in PAPERS if os.path.isdir(os.path.join(ROOT, p))]
USES_COMMON = re.compile(r'^\s*(from|import)\s+common\b', re.M)

# imports every given module with `common` made unimportable
BLOCK = '''
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == 'common' or name.startswith('common.'):
            raise ImportError('common is not importable here')
sys.meta_path.insert(0, Block())
for m in sys.argv[1:]:
    importlib.import_module(m)
'''


def modules(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, folder, '*.py')) +
                       glob.glob(os.path.join(ROOT, folder, '*', '*.py'))):
        rel = os.path.relpath(path, os.path.join(ROOT, folder))
        if rel.startswith(('tests', 'configs', 'output')) or rel.endswith('__init__.py') and '/' not in rel:
            continue
        out.append((rel, path))
    return out


def test_some_paper_folder_exists():
    assert PRESENT, 'no paper folder yet'


@pytest.mark.parametrize('folder', PRESENT)
def test_folder_layout(folder):
    for f in ('README.md', 'main.py', 'cfg.yaml', 'tests', 'configs'):
        assert os.path.exists(os.path.join(ROOT, folder, f)), f'{folder}/ has no {f}'
    assert glob.glob(os.path.join(ROOT, folder, 'tests', 'test_*.py')), f'{folder}/tests has no test file'


@pytest.mark.parametrize('folder', PRESENT)
def test_model_and_algorithm_modules_stand_alone(folder):
    standalone = []
    for rel, path in modules(folder):
        src = open(path).read()
        name = os.path.basename(rel)
        if name in ('model.py', 'models.py', 'loss.py', 'losses.py') or rel.startswith('models/'):
            assert not USES_COMMON.search(src), f'{folder}/{rel} imports common: model/loss files must stand alone'
        if rel != 'main.py' and not USES_COMMON.search(src):
            standalone.append(rel[:-3].replace('/', '.'))
    if not standalone:
        return
    r = subprocess.run([sys.executable, '-c', BLOCK, *standalone], cwd=os.path.join(ROOT, folder), text=True,
                       capture_output=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, f'{folder}: a module that does not import common needs it (or fails):\n{r.stderr}'


CHECK_CONFIGS = '''
import glob, main
from common.config import load_config
for p in ['cfg.yaml'] + sorted(glob.glob('configs/**/*.yaml', recursive=True)):
    load_config(p, defaults=main.DEFAULTS)
    print('ok', p)
'''


@pytest.mark.parametrize('folder', PRESENT)
def test_every_config_validates_against_main_defaults(folder):
    r = subprocess.run([sys.executable, '-c', CHECK_CONFIGS], cwd=os.path.join(ROOT, folder), text=True,
                       capture_output=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, f'{folder}: a config does not validate against main.DEFAULTS:\n{r.stderr[-2000:]}'
    cfg = open(os.path.join(ROOT, folder, 'cfg.yaml')).read()
    for key in ('output_dir', 'seed', 'device', 'data'):
        assert re.search(rf'^{key}:', cfg, re.M), f'{folder}/cfg.yaml lacks the outer key {key}'
