"""YAML configs with a schema: every main.py declares ``DEFAULTS`` (each valid key with its default).

``load_config`` merges a YAML file and ``--opts a.b=value`` overrides onto the defaults, and rejects an
unknown key (naming it and the valid keys at its level) or a value of the wrong type.
"""
import argparse
import copy
import os

import yaml

from .errors import ConfigError

__all__ = ['Config', 'ConfigError', 'load_config', 'parse_cli', 'save_config', 'to_dict']


class Config(dict):
    """A nested dict with attribute access: ``cfg.data.name`` is ``cfg['data']['name']``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for k, v in self.items():
            if isinstance(v, dict) and not isinstance(v, Config):
                super().__setitem__(k, Config(v))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}' (keys: {', '.join(sorted(self))})") from None

    def __setattr__(self, name, value):
        self[name] = value

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Config):
            value = Config(value)
        super().__setitem__(key, value)

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))

    def to_dict(self):
        return to_dict(self)


def to_dict(obj):
    """Plain dicts/lists all the way down (for YAML/JSON dumps and checkpoints)."""
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _type_name(v):
    return 'null' if v is None else type(v).__name__


def _coerce(value, default, key):
    """Check ``value`` against the type of ``default``; return the (possibly converted) value."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    else:
        return value
    raise ConfigError(f"config key '{key}' expects a value of type {_type_name(default)} "
                      f"(default {default!r}), got {value!r} of type {_type_name(value)}")


def _merge(defaults, given, prefix=''):
    """Return ``defaults`` updated with ``given``, validating keys and types recursively."""
    out = copy.deepcopy(defaults)
    if not isinstance(given, dict):
        raise ConfigError(f"config section '{prefix or '<top level>'}' must be a mapping, got {given!r}")
    free = isinstance(defaults, dict) and len(defaults) == 0
    for k, v in given.items():
        key = f'{prefix}{k}'
        if k not in defaults:
            if free:
                out[k] = v
                continue
            valid = ', '.join(sorted(map(str, defaults))) or '(none)'
            raise ConfigError(f"unknown config key '{key}'; valid keys at this level: {valid}")
        d = defaults[k]
        if isinstance(d, dict) and isinstance(v, dict):
            out[k] = _merge(d, v, key + '.')
        else:
            out[k] = _coerce(v, d, key)
    return out


def _parse_override(item):
    if '=' not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value (e.g. data.root=/path)")
    key, raw = item.split('=', 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ''
    except yaml.YAMLError:
        value = raw
    return key, raw, value


def _apply_override(cfg, defaults, item):
    key, raw, value = _parse_override(item)
    parts = key.split('.')
    node, schema = cfg, defaults
    for i, p in enumerate(parts[:-1]):
        here = '.'.join(parts[:i + 1])
        if isinstance(node, dict) and p in node and not isinstance(node[p], dict):
            raise ConfigError(f"config key '{here}' is a value, not a section: cannot set '{key}' (override '{item}')")
        if not isinstance(node, dict) or p not in node:
            valid = ', '.join(sorted(map(str, node))) if isinstance(node, dict) else '(none)'
            raise ConfigError(f"unknown config key '{here}' in override '{item}'; valid keys at this level: {valid}")
        node = node[p]
        schema = schema.get(p) if isinstance(schema, dict) else None
    last = parts[-1]
    free = isinstance(schema, dict) and len(schema) == 0
    if last not in node and not free:
        valid = ', '.join(sorted(map(str, node)))
        raise ConfigError(f"unknown config key '{key}' in override '{item}'; valid keys at this level: {valid}")
    current = node.get(last)
    if isinstance(current, str):
        # a string key keeps the text as written, unless it is quoted ('' or "a b" give the string inside)
        r = raw.strip()
        value = value if len(r) >= 2 and r[0] == r[-1] and r[0] in '\'"' and isinstance(value, str) else raw
    elif isinstance(current, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; override its keys (e.g. {key}.name=...)")
        value = _merge(schema.get(last) if isinstance(schema, dict) and isinstance(schema.get(last), dict)
                       else current, value, key + '.')
    else:
        value = _coerce(value, current, key)
    node[last] = value


def load_config(path, overrides=(), defaults=None):
    """Load ``path`` (YAML), merge it onto ``defaults`` (validated), then apply ``overrides``.

    Raises :class:`ConfigError` for a missing/unreadable file, invalid YAML, an unknown key or a wrong type.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            with open(path) as f:
                given = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    else:
        given = {}
    if defaults is not None:
        cfg = _merge(to_dict(defaults), given)
        schema = to_dict(defaults)
    else:
        cfg, schema = copy.deepcopy(given), None
    for item in overrides or ():
        _apply_override(cfg, schema if schema is not None else cfg, item)
    return Config(cfg)


def parse_cli(defaults, argv=None, description=None, default_cfg='cfg.yaml'):
    """The command line of every ``main.py``: ``--cfg FILE [--opts key=value ...]``.

    ``default_cfg`` is the file read when ``--cfg`` is not given (``None``: the defaults alone).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--cfg', default=default_cfg,
                        help=f'YAML config (default: {default_cfg}, the embedded default)')
    parser.add_argument('--opts', nargs='*', default=[], metavar='KEY=VALUE',
                        help='overrides, dotted keys typed from the config, e.g. --opts epochs=2 data.root=/data')
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts, defaults)
    return cfg


def save_config(cfg, output_dir, name='config.yaml'):
    """Write the resolved config into ``output_dir/name``."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
        if old == text:
            return path
        # a resumed run with another config: keep the previous resolved config beside the new one
        stem, ext = os.path.splitext(path)
        k = 1
        while os.path.exists(f'{stem}.{k}{ext}'):
            k += 1
        os.replace(path, f'{stem}.{k}{ext}')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path
