"""The main job: smoke runs of every task with tiny sizes, resume after a kill, and the error paths."""
import json
from pathlib import Path

import pytest
import torch

import main as entrannas_main
from common.errors import ConfigError, guard
from genotypes import DARTS_V2, FlexGenotype, Genotype, parse_genotype
from model import NetworkCIFAR
from utils import count_parameters

FOLDER = Path(__file__).resolve().parents[1]
CFG = str(FOLDER / 'cfg.yaml')
TINY = ['data.image_size=8', 'data.train_size=64', 'data.test_size=32', 'search.init_channels=4',
        'search.layers=3', 'search.batch_size=16', 'search.epochs=1', 'train.init_channels=4', 'train.layers=3',
        'train.batch_size=16', 'train.epochs=1', 'train.auxiliary=false', 'train.cutout_length=2']


def _metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_search_train_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / 'run'
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', *TINY])
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file()
    g = parse_genotype(res['genotype'])
    assert isinstance(g, Genotype) and len(g.normal) == 8
    assert res['params'] == count_parameters(NetworkCIFAR(4, 10, 3, False, g)) == res['derived_params']
    assert 0.0 <= res['test_top1'] <= 100.0
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['phase'] == 'train' and state['epoch'] == 2 and state['genotype'] == res['genotype']
    # restart with one more training epoch: the search is not redone, training continues from last.pth
    res2 = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', *TINY, 'train.epochs=2'])
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 2' in log and 'search already finished' in log
    phases = [(m['phase'], m['epoch']) for m in _metrics(out) if m.get('phase') in ('search', 'train')]
    assert phases == [('search', 0), ('train', 1), ('train', 2)]
    assert res2['genotype'] == res['genotype']
    assert torch.load(out / 'last.pth', weights_only=False)['epoch'] == 3


def test_killed_search_resumes_at_its_epoch(tmp_path):
    out = tmp_path / 'run'
    entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', *TINY, 'task=search'])
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['phase'] == 'search' and state['epoch'] == 1 and 'arch' in state
    alphas = state['arch']['alphas_normal']
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', *TINY, 'search.epochs=2'])
    assert 'at epoch 1' in (out / 'log.txt').read_text()
    searched = [m['epoch'] for m in _metrics(out) if m.get('phase') == 'search']
    assert searched == [0, 1]
    final = torch.load(out / 'last.pth', weights_only=False)
    assert final['phase'] == 'train' and final['search_result']['genotype'] == res['genotype']
    assert not torch.equal(alphas, torch.zeros_like(alphas))


def test_dst_search_gives_flexible_genotype(tmp_path):
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *TINY, 'task=search',
                               'search.mode=dst', 'search.arch_learning_rate=0.05'])
    g = parse_genotype(res['genotype'])
    assert isinstance(g, FlexGenotype) and {d for _, _, d in g.normal} == {2, 3, 4, 5}
    assert all(op != 'none' for op, _, _ in g.normal + g.reduce)
    assert res['derived_params'] == count_parameters(NetworkCIFAR(4, 10, 3, False, g))
    log = (tmp_path / 'log.txt').read_text()
    assert 'in-degree=' in log and 't=[' in log


def test_darts_second_order_search(tmp_path):
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *TINY, 'task=search',
                               'search.mode=darts', 'search.feature_sharing=false', 'search.unrolled=true',
                               'data.train_size=32'])
    assert isinstance(parse_genotype(res['genotype']), Genotype)
    assert 'engine_cells=[0, 1, 2]' in (tmp_path / 'log.txt').read_text()


def test_imagenet_style_search_stem_and_per_class_split(tmp_path):
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *TINY, 'task=search',
                               'search.mode=dst', 'search.stem=imagenet', 'data.image_size=32',
                               'search.train_per_class=2', 'search.valid_per_class=2', 'search.batch_size=8',
                               'search.warmup_epochs=1', 'search.arch_start_epoch=1'])
    assert 'weight / 20 architecture images' in (tmp_path / 'log.txt').read_text()
    m = [m for m in _metrics(tmp_path) if m.get('phase') == 'search'][0]
    assert m['arch_loss'] is None  # no architecture step before arch_start_epoch
    assert isinstance(parse_genotype(res['genotype']), FlexGenotype)


def test_train_tasks(tmp_path):
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path / "c"}', *TINY, 'task=train',
                               'train.arch=DARTS_V2', 'data.image_size=32', 'data.train_size=32',
                               'train.auxiliary=true', 'train.cutout_length=16'])
    assert res['params'] == count_parameters(NetworkCIFAR(4, 10, 3, True, DARTS_V2))
    assert 0.0 <= res['top1'] <= 100.0
    res = entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path / "i"}', *TINY,
                               'task=train_imagenet', 'data.image_size=64', 'data.train_size=32',
                               'train.init_channels=8', 'train.lr_scheduler=step', 'train.label_smoothing=0.1',
                               'train.color_jitter=true'])
    assert 0.0 <= res['top5'] <= 100.0 and res['top1'] <= res['top5']


@pytest.mark.parametrize('opts,key', [
    (['search.mode=pcdarts'], 'search.mode'),
    (['task=train', 'train.arch=DARTS_V9'], 'train.arch'),
    (['search.engine_cells=[0, 7]'], 'search.engine_cells'),
    (['train.auxiliary=true'], 'train.auxiliary'),
    (['search.train_portion=1.5'], 'search.train_portion'),
    (['data.image_size=10'], 'data.image_size'),
    (['search.nodes=4'], 'search.nodes'),
])
def test_bad_config_names_the_key(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        entrannas_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *TINY, *opts])


def test_cli_error_exits_2_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        guard(entrannas_main.main, ['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'search.mode=pcdarts'])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and 'search.mode' in err and 'Traceback' not in err
