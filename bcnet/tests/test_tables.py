import json

import numpy as np
import pytest

import tables
from conftest import bench_path, shared_data_dir


@pytest.fixture(autouse=True)
def _needs_data():
    if not bench_path('mobilenet').is_file() or not bench_path('resnet').is_file():
        pytest.skip('Channel-Bench-Macro files not available (set SHARED_DATA_DIR)')


def test_facts_command(capsys):
    assert tables.main(['facts', '--data-dir', str(shared_data_dir())]) == 0
    out = capsys.readouterr().out
    assert '4444342 91.887 -> 4444342 91.887' in out and '4344424 93.893 -> 4344424 93.893' in out


def test_corr_command_on_a_score_file(tmp_path, capsys, bench_mobilenet):
    rng = np.random.default_rng(0)
    keys = [k for k in bench_mobilenet.keys if k != '4444444']
    res = [{'Num': i + 1, 'subnet': int(k), 'score': bench_mobilenet.mean(k) + float(rng.normal(0, 0.1))}
           for i, k in enumerate(keys)]
    p = tmp_path / 'scores.json'
    p.write_text(json.dumps({'Result': res}))
    assert tables.main(['corr', '--scores', str(p), '--space', 'mobilenet', '--data-dir',
                        str(shared_data_dir()), '--exclude-width1']) == 0
    out = capsys.readouterr().out
    assert '2186 archs without width-1 layers' in out
    pear = float(out.split('Pearson ')[1].split()[0])
    assert 0.5 < pear < 1.0


def test_search_command_runs(capsys):
    assert tables.main(['search', '--seeds', '2', '--steps', '300', '--max-epoch', '1', '--spaces', 'mobilenet',
                        '--budget', 'mobilenet=100e6', '--data-dir', str(shared_data_dir())]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith('100M')]
    assert len(rows) == 2 and 'uniform' in rows[0] and 'prior' in rows[1]
