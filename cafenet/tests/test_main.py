import json
import os

import pytest
import torch

import main
from common.errors import ConfigError, guard

from conftest import FOLDER, bench_path

TINY = ['data.train_size=60', 'data.test_size=32', 'data.image_size=16', 'data.val_split=0.2',
        'model.width_mult=0.125', 'train.batch_size=16', 'train.eval_recal_batches=1', 'search.max_epoch=2',
        'search.population_num=4', 'search.top_k_num=2', 'search.mutation_num=2', 'search.crossover_num=2',
        'search.recal_batches=1', 'search.eval_placements=2', 'device=cpu']


def _run(tmp, *opts):
    return main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={tmp}', *TINY, *opts])


def _metrics(tmp):
    with open(os.path.join(tmp, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_smoke_run_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / 'run'
    st = _run(out, 'train.epochs=1')
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'search_result.json'):
        assert (out / name).is_file(), name
    r = st['result']
    assert 0.8 * r['flops_limit'] <= r['macs'] <= r['flops_limit'] and all(1 <= w <= 4 for w in r['best'])
    assert len(r['placement']) == 7 and [len(u) for u in r['placement']] == r['best']
    ck = torch.load(out / 'last.pth', weights_only=False)
    assert ck['epoch'] == 1 and ck['result']['best'] == r['best'] and ck['trainer_iteration'] == 3
    last = (out / 'log.txt').read_text().splitlines()[-1]
    assert 'CafeNet search (supernet evaluator' in last and 'MACs' in last
    sup = [m for m in _metrics(out) if m.get('stage') == 'supernet']
    assert sup[0]['min_min_steps'] >= 1 and 0 <= sup[0]['max_width_top1'] <= 100
    # a longer run in the same folder continues from last.pth: one more supernet epoch, then a new search
    _run(out, 'train.epochs=2')
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 1' in log
    assert [m['epoch'] for m in _metrics(out) if m.get('stage') == 'supernet'] == [1, 2]
    assert [m['search_epoch'] for m in _metrics(out) if 'search_epoch' in m] == [1, 2, 1, 2]
    ck = torch.load(out / 'last.pth', weights_only=False)
    assert ck['epoch'] == 2 and ck['trainer_iteration'] == 6
    # a third start has nothing left to train or search: it reprints the result
    _run(out, 'train.epochs=2')
    assert len([m for m in _metrics(out) if 'search_epoch' in m]) == 4


def test_search_resumes_mid_way(tmp_path):
    out = tmp_path / 'run'
    _run(out, 'train.epochs=1', 'search.max_epoch=1')
    ck = torch.load(out / 'last.pth', weights_only=False)
    assert ck['search']['epoch'] == 1
    ck['result'] = None          # pretend the run was killed after the first search generation
    torch.save(ck, out / 'last.pth')
    st = _run(out, 'train.epochs=1', 'search.max_epoch=2')
    assert st['result']['epochs'] == 2
    assert [m['search_epoch'] for m in _metrics(out) if 'search_epoch' in m] == [1, 2]


def test_retrain_stage(tmp_path):
    out = tmp_path / 'rt'
    _run(out, 'stages=[retrain]', 'retrain.widths=[2,1,3,4,2,1,3]', 'retrain.epochs=1', 'retrain.batch_size=16')
    m = [x for x in _metrics(out) if x.get('stage') == 'retrain']
    assert len(m) == 1 and 0.0 <= m[0]['top1'] <= 100.0
    assert (out / 'best.pth').is_file()
    assert 'CafeNet retrained widths 2134213' in (out / 'log.txt').read_text().splitlines()[-1]


def test_flops_sensitive_bins_run(tmp_path):
    out = tmp_path / 'fb'
    st = _run(out, 'train.epochs=1', 'cafenet.bins=flops', 'cafenet.max_bin=8', 'search.max_epoch=1')
    log = (out / 'log.txt').read_text()
    assert '(flops)' in log and st['result']['best'] is not None


def test_benchmark_evaluator_search(tmp_path):
    if not bench_path('mobilenet').is_file():
        pytest.skip('Channel-Bench-Macro file not available')
    out = tmp_path / 'bm'
    st = main.main(['--cfg', str(FOLDER / 'configs' / 'cbm_mobilenet_benchmark_search.yaml'), '--opts',
                    f'output_dir={out}', 'search.max_epoch=2', f'benchmark.path={bench_path("mobilenet")}'])
    r = st['result']
    assert 80e6 <= r['macs'] <= 100e6 and 1 <= r['benchmark_rank'] <= 16384
    assert r['score'] == pytest.approx(r['benchmark_mean'])


@pytest.mark.parametrize('opt,key', [('stages=[train]', 'stages'), ('cafenet.r=-1', 'cafenet.r'),
                                     ('cafenet.num_candidates=0', 'cafenet.num_candidates'),
                                     ('cafenet.bins=random', 'cafenet.bins'),
                                     ('cafenet.num_bins=5', 'cafenet.num_bins'),
                                     ('search.evaluator=benchmark', 'search.evaluator'),
                                     ('search.eval_placements=0', 'search.eval_placements'),
                                     ('data.val_split=1.0', 'data.val_split'),
                                     ('train.lr=-1', 'train.lr')])
def test_bad_config_names_the_key(tmp_path, opt, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        _run(tmp_path / 'bad', opt)


def test_cli_error_exits_2_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        guard(main.main, ['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={tmp_path}', 'model.name=vgg'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'model.name' in err and 'Traceback' not in err


def test_retrain_rejects_bad_widths(tmp_path):
    with pytest.raises(ConfigError, match='retrain.widths'):
        _run(tmp_path / 'rw', 'stages=[retrain]', 'retrain.widths=[5,1,1,1,1,1,1]')


def test_every_config_validates(tmp_path):
    from common.config import load_config
    for path in sorted((FOLDER / 'configs').glob('*.yaml')):
        cfg = load_config(str(path), [f'output_dir={tmp_path}'], defaults=main.DEFAULTS)
        if 'benchmark' in path.name and not bench_path('mobilenet').is_file():
            continue
        if 'benchmark' in path.name:
            cfg.benchmark.path = str(bench_path(cfg.model.name[4:]))
        elif 'score_cbm' in cfg.stages:
            cfg.stages = [s for s in cfg.stages if s != 'score_cbm']   # the benchmark file may be absent
        main.validate(cfg)
