import json
import os

import pytest
import torch

import main
from common.errors import ConfigError, guard

from conftest import FOLDER, bench_path

TINY = ['data.train_size=48', 'data.test_size=32', 'data.image_size=16', 'model.width_mult=0.125',
        'train.batch_size=16', 'train.eval_recal_batches=1', 'search.max_epoch=2', 'search.population_num=4',
        'search.top_k_num=2', 'search.mutation_num=2', 'search.crossover_num=2', 'search.recal_batches=1',
        'search.prior_steps=100', 'device=cpu']


def _run(tmp, *opts):
    return main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={tmp}', *TINY, *opts])


def _metrics(tmp):
    with open(os.path.join(tmp, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_smoke_run_writes_outputs_and_resumes(tmp_path, capsys):
    out = tmp_path / 'run'
    st = _run(out, 'train.epochs=1')
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'search_result.json'):
        assert (out / name).is_file(), name
    r = st['result']
    lo_limit = 0.8 * r['flops_limit']
    assert lo_limit <= r['macs'] <= r['flops_limit'] and all(1 <= w <= 4 for w in r['best'])
    ck = torch.load(out / 'last.pth', weights_only=False)
    assert ck['epoch'] == 1 and ck['result']['best'] == r['best'] and len(ck['algorithm']['records']) > 0
    assert 'BCNet search (supernet evaluator' in (out / 'log.txt').read_text().splitlines()[-1]
    # a longer run in the same folder continues from last.pth: one more supernet epoch, then a new search
    _run(out, 'train.epochs=2')
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 1' in log
    epochs = [m['epoch'] for m in _metrics(out) if m.get('stage') == 'supernet' and 'epoch' in m]
    assert epochs == [1, 2]
    assert [m['search_epoch'] for m in _metrics(out) if 'search_epoch' in m] == [1, 2, 1, 2]
    assert torch.load(out / 'last.pth', weights_only=False)['epoch'] == 2
    # a third start has nothing left to train or search: it reprints the result
    _run(out, 'train.epochs=2')
    assert len([m for m in _metrics(out) if 'search_epoch' in m]) == 4


def test_search_resumes_mid_way(tmp_path):
    out = tmp_path / 'run'
    _run(out, 'train.epochs=1', 'search.max_epoch=1')
    ck = torch.load(out / 'last.pth', weights_only=False)
    assert ck['search']['epoch'] == 1
    # pretend the run was killed after the first search generation
    ck['result'] = None
    torch.save(ck, out / 'last.pth')
    st = _run(out, 'train.epochs=1', 'search.max_epoch=2')
    assert st['result']['epochs'] == 2
    gens = [m['search_epoch'] for m in _metrics(out) if 'search_epoch' in m]
    assert gens == [1, 2]


def test_retrain_stage(tmp_path):
    out = tmp_path / 'rt'
    _run(out, 'stages=[retrain]', 'retrain.widths=[2,1,3,4,2,1,3]', 'retrain.epochs=1', 'retrain.batch_size=16')
    m = [x for x in _metrics(out) if x.get('stage') == 'retrain']
    assert len(m) == 1 and 0.0 <= m[0]['top1'] <= 100.0
    assert (out / 'best.pth').is_file()


def test_benchmark_evaluator_search(tmp_path):
    if not bench_path('mobilenet').is_file():
        pytest.skip('Channel-Bench-Macro file not available')
    out = tmp_path / 'bm'
    st = main.main(['--cfg', str(FOLDER / 'configs' / 'cbm_mobilenet_benchmark_search.yaml'), '--opts',
                    f'output_dir={out}', 'search.max_epoch=2', 'search.benchmark_steps=500',
                    f'benchmark.path={bench_path("mobilenet")}'])
    r = st['result']
    assert 80e6 <= r['macs'] <= 100e6 and 1 <= r['benchmark_rank'] <= 16384
    assert r['score'] == pytest.approx(r['benchmark_mean'])


@pytest.mark.parametrize('opt,key', [('stages=[train]', 'stages'), ('bcnet.complement=half', 'bcnet.complement'),
                                     ('bcnet.min_channel_bins=3', 'bcnet.min_channel_bins'),
                                     ('search.evaluator=benchmark', 'search.evaluator'),
                                     ('search.flops_ratio=1.5', 'search.flops_ratio'),
                                     ('train.lr=-1', 'train.lr')])
def test_bad_config_names_the_key(tmp_path, opt, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        _run(tmp_path / 'bad', opt)


def test_cli_error_exits_2_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        guard(main.main, ['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={tmp_path}', 'model.name=vgg'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'model.name' in err and 'Traceback' not in err


def test_score_cbm_stage_writes_official_format(tmp_path):
    if not bench_path('mobilenet').is_file():
        pytest.skip('Channel-Bench-Macro file not available')
    out = tmp_path / 'sc'
    main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', 'stages=[score_cbm]',
               'model.name=cbm_mobilenet', 'model.width_mult=1.0', 'data.image_size=32', 'data.train_size=16',
               'data.test_size=8', 'train.batch_size=8', 'search.recal_batches=1', 'score_cbm.limit=3',
               f'benchmark.path={bench_path("mobilenet")}', 'device=cpu'])
    with open(out / 'cbm_scores.json') as f:
        res = json.load(f)['Result']
    assert len(res) == 3 and all(0 <= r['score'] <= 100 and len(str(r['subnet'])) == 7 for r in res)
    m = [x for x in _metrics(out) if x.get('stage') == 'score_cbm'][0]
    assert m['archs'] == 3 and -1 <= m['kendall_tau_b'] <= 1
