import pytest
import yaml

from common.config import Config, ConfigError, load_config, save_config

DEFAULTS = {'output_dir': 'out', 'seed': 0, 'device': 'auto', 'lr': 0.1, 'flag': False, 'sizes': [32, 16],
            'data': {'name': 'synthetic', 'root': None, 'image_size': 32}, 'extra': {}}


def write(tmp_path, text):
    p = tmp_path / 'c.yaml'
    p.write_text(text)
    return str(p)


def test_merge_and_attribute_access(tmp_path):
    cfg = load_config(write(tmp_path, 'lr: 0.5\ndata: {image_size: 64}\n'), defaults=DEFAULTS)
    assert isinstance(cfg, Config)
    assert cfg.lr == 0.5 and cfg.data.image_size == 64 and cfg.data.name == 'synthetic'
    assert cfg.seed == 0 and cfg.sizes == [32, 16]


def test_unknown_key_names_key_and_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, 'data: {imagesize: 64}\n'), defaults=DEFAULTS)
    msg = str(e.value)
    assert "'data.imagesize'" in msg and 'image_size' in msg and 'root' in msg


def test_wrong_type_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="'seed'"):
        load_config(write(tmp_path, 'seed: abc\n'), defaults=DEFAULTS)
    with pytest.raises(ConfigError, match="'flag'"):
        load_config(write(tmp_path, 'flag: 1\n'), defaults=DEFAULTS)
    with pytest.raises(ConfigError, match="'data'"):
        load_config(write(tmp_path, 'data: 3\n'), defaults=DEFAULTS)


def test_int_for_float_and_yaml_exponent_strings(tmp_path):
    cfg = load_config(write(tmp_path, 'lr: 1\n'), defaults=DEFAULTS)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    cfg = load_config(write(tmp_path, 'lr: 1e-4\n'), defaults=DEFAULTS)  # YAML 1.1 reads this as a string
    assert cfg.lr == 1e-4


def test_overrides_are_typed_from_loaded_value(tmp_path):
    cfg = load_config(write(tmp_path, ''), ['lr=2', 'data.root=/x/y', 'flag=true', 'sizes=[8, 4]',
                                              'data.name=123', 'extra.anything=5'], DEFAULTS)
    assert cfg.lr == 2.0 and isinstance(cfg.lr, float)
    assert cfg.data.root == '/x/y' and cfg.flag is True and cfg.sizes == [8, 4]
    assert cfg.data.name == '123'  # a string key keeps the text as written
    assert load_config(write(tmp_path, ''), ["data.name=''"], DEFAULTS).data.name == ''
    assert load_config(write(tmp_path, ''), ['data.name="a: b"'], DEFAULTS).data.name == 'a: b'
    assert cfg.extra.anything == 5  # an empty-dict default accepts any key


@pytest.mark.parametrize('override,match', [('lrr=1', "'lrr'"), ('data.x=1', "'data.x'"), ('lr=abc', "'lr'"),
                                            ('lr', 'key=value'), ('seed.a=1', "'seed.a'")])
def test_bad_overrides(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, ''), [override], DEFAULTS)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        load_config(str(tmp_path / 'nope.yaml'), defaults=DEFAULTS)
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_config(write(tmp_path, 'a: [1, 2\n'), defaults=DEFAULTS)
    with pytest.raises(ConfigError, match='mapping'):
        load_config(write(tmp_path, '- 1\n- 2\n'), defaults=DEFAULTS)


def test_save_config_round_trip_and_keeps_previous(tmp_path):
    cfg = load_config(write(tmp_path, 'lr: 0.3\n'), defaults=DEFAULTS)
    path = save_config(cfg, str(tmp_path / 'run'))
    assert yaml.safe_load(open(path)) == cfg.to_dict()
    save_config(cfg, str(tmp_path / 'run'))
    assert not (tmp_path / 'run' / 'config.1.yaml').exists()  # identical: nothing moved
    cfg.lr = 0.7
    save_config(cfg, str(tmp_path / 'run'))
    assert yaml.safe_load(open(tmp_path / 'run' / 'config.1.yaml'))['lr'] == 0.3
    assert yaml.safe_load(open(path))['lr'] == 0.7
