import time

import pytest

from fvt_training.evaluation.latency import time_calls, time_interleaved


def test_calls_are_warmed_up_then_take_turns():
    log = []
    stats = time_interleaved({'a': lambda: log.append('a'), 'b': lambda: log.append('b')},
                             runs=3, warmup=2)
    assert ''.join(log) == 'aabb' + 'ab' * 3
    assert stats['a']['runs'] == stats['b']['runs'] == 3 and stats['a']['warmup'] == 2


def test_figures_are_per_image_milliseconds():
    stats = time_calls(lambda: time.sleep(0.004), runs=5, warmup=1, batch=2)
    assert 1.5 <= stats['min_ms'] <= stats['median_ms'] <= stats['p90_ms']
    assert stats['batch'] == 2 and stats['cpu_count'] >= 1
    assert len(stats['load_average']) == 2 and min(stats['load_average']) >= 0


@pytest.mark.parametrize('kwargs', [{'runs': 0}, {'warmup': -1}, {'batch': 0}])
def test_bad_arguments_are_refused(kwargs):
    args = {'runs': 3, 'warmup': 0, 'batch': 1, **kwargs}
    with pytest.raises(ValueError, match='expected runs >= 1'):
        time_interleaved({'a': lambda: None}, **args)
