from pathlib import Path

import pytest
import yaml

from fvt_training.models.factories import check_input_size
from fvt_training.runs.config import (
    ConfigError,
    defaults,
    load_config,
    parse_override,
    render_config,
    write_config,
)
from fvt_training.runs.config_schema import FIELDS

CONFIGS = sorted((Path(__file__).parents[1] / 'configs').glob('*.yaml'))


def _write(tmp_path, text, name='exp.yaml'):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_follow_the_earlier_study():
    config = defaults()
    assert config['train']['learning_rate'] == 5e-4
    assert config['train']['plateau_factor'] == 0.2 and config['train']['plateau_patience'] == 4
    assert config['train']['early_stopping_patience'] == 9
    assert config['train']['epochs'] == 100


def test_file_plus_overrides(tmp_path):
    path = _write(tmp_path, 'data:\n  prepared_dir: data/x/256x128\nmodel:\n'
                            '  architecture: fpn\n')
    config = load_config(path, ['model.backbone=resnet18', 'epochs=3', 'loss.class_weights=auto',
                                'model.input_size=[128, 256]'])
    assert config['name'] == 'exp'
    assert config['model'] == {**defaults()['model'], 'architecture': 'fpn',
                               'backbone': 'resnet18', 'input_size': [128, 256]}
    assert config['train']['epochs'] == 3
    assert config['loss']['class_weights'] == 'auto'


@pytest.mark.parametrize(('override', 'message'), [
    ('train.epochs=abc', "train.epochs must be int >= 1 .*e.g. `train.epochs: 100`; got 'abc'"),
    ('model.architecture=segnet', "must be unet_like|unet|fpn|linknet|pspnet .*got 'segnet'"),
    ('loss.class_weights=[1, 2]', r'list of 8 floats.*got \[1, 2\]'),
    ('train.plateau_factor=1.5', r'float in \(0, 1\)'),
    ('loss.edge_weight=-1', r'loss.edge_weight must be float >= 0 .*got -1'),
    ('loss.edge_width=0', r'loss.edge_width must be int >= 1 .*got 0'),
    ('model.input_size=[128]', r'\[height, width\]'),
    ('model.backbne=resnet18', "unknown configuration key 'model.backbne' .*did you mean "
                               "'model.backbone'"),
    ('epochs', 'overrides are key=value'),
])
def test_invalid_values_show_the_valid_form(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ['data.prepared_dir=x', override])


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; a user means the number.
    path = _write(tmp_path, 'data:\n  prepared_dir: x\ntrain:\n  min_learning_rate: 1e-8\n')
    config = load_config(path, ['train.learning_rate=1e-4'])
    assert config['train']['learning_rate'] == 1e-4
    assert config['train']['min_learning_rate'] == 1e-8
    for bad in ('nan', 'inf', '1e-4x'):
        with pytest.raises(ConfigError, match='train.learning_rate must be float > 0'):
            load_config(None, ['data.prepared_dir=x', f'train.learning_rate={bad}'])


def test_required_keys_and_unknown_sections(tmp_path):
    with pytest.raises(ConfigError, match='data.prepared_dir is required .*e.g. '
                                          '`data.prepared_dir: '):
        load_config(_write(tmp_path, 'model:\n  architecture: fpn\n'))
    with pytest.raises(ConfigError, match="unknown configuration key 'optimizer'"):
        load_config(_write(tmp_path, 'data:\n  prepared_dir: x\noptimizer:\n  lr: 1\n'))
    with pytest.raises(ConfigError, match='does not exist'):
        load_config(tmp_path / 'missing.yaml')


def test_a_run_judged_unseen_cannot_let_validation_steer_it():
    fixed = ['data.prepared_dir=x', 'train.select=last', 'train.lr_schedule=cosine']
    config = load_config(None, [*fixed, 'data.holdout_sequence=0006R0'])
    assert config['data']['holdout_sequence'] == '0006R0'
    assert config['train']['select'] == 'last'
    with pytest.raises(ConfigError, match='data.holdout_sequence: 0006R0 needs train.select: '
                                          'last .*; got train.select: best'):
        load_config(None, ['data.prepared_dir=x', 'train.lr_schedule=cosine',
                           'data.holdout_sequence=0006R0'])
    with pytest.raises(ConfigError, match='train.select: last needs train.lr_schedule: cosine '
                                          '.*; got train.lr_schedule: plateau'):
        load_config(None, ['data.prepared_dir=x', 'train.select=last'])
    with pytest.raises(ConfigError, match=r"train.select must be best\|last .*got 'final'"):
        load_config(None, ['data.prepared_dir=x', 'train.select=final'])


def test_bare_keys_resolve_to_their_section():
    assert parse_override('backbone=resnet34') == ('model.backbone', 'resnet34')
    assert parse_override('name=exp1') == ('name', 'exp1')
    assert parse_override('loss.name=dice') == ('loss.name', 'dice')


def test_rendered_config_is_commented_and_round_trips(tmp_path):
    config = load_config(None, ['data.prepared_dir=data/camvid/256x192', 'name=x',
                                'loss.class_weights=[0, 1, 1, 1, 1, 1, 2, 2]'])
    path = tmp_path / 'config.yaml'
    write_config(config, path, header='test')
    text = path.read_text()
    leaf_lines = [ln for ln in text.splitlines() if ln and not ln.startswith('#')
                  and not ln.endswith(':')]
    assert [ln.split(':')[0].strip() for ln in leaf_lines] == [
        p.rsplit('.', 1)[-1] for p in FIELDS]
    assert all(f'  # ({f.kind}) {f.doc}' in ln for ln, f in zip(leaf_lines, FIELDS.values(),
                                                                  strict=True))
    assert load_config(path) == config
    assert yaml.safe_load(render_config(config)) == config


@pytest.mark.parametrize('path', CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid_and_fully_commented(path):
    config = load_config(path)
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith('#') and not line.endswith(':'):
            assert '  # (' in line, line
    size = config['data']['prepared_dir'].rstrip('/').rsplit('/', 1)[-1]
    width, height = (int(v) for v in size.split('x'))
    check_input_size(config['model']['architecture'], (height, width), config['model']['filters'])


def test_the_experiment_ladder_ships():
    names = {p.stem for p in CONFIGS}
    assert {'baseline', 'aug_light', 'aug_flip_rotate', 'aug_heavy', 'loss_dice',
            'loss_weighted_dice', 'loss_focal', 'loss_cce_dice', 'loss_jaccard'} <= names
    assert any(n.startswith('camvid_') for n in names)


def test_cli_config_prints_a_commented_template(capsys):
    from fvt_training.cli import main

    assert main(['config', 'epochs=7']) == 0
    text = capsys.readouterr().out
    assert 'epochs: 7  # (int >= 1) maximum number of epochs' in text
    assert 'prepared_dir: null  # (str)' in text
    assert main(['config', 'missing.yaml']) == 2
    assert 'missing.yaml does not exist' in capsys.readouterr().err
