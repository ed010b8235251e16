import pytest

from flatgen.ladder import degraded_level, first_crossing


def test_degraded_level_is_the_first_level_past_the_margin():
    # 10% worse is within a 25% margin; 30% worse is not
    assert degraded_level([50, 20, 10, 5], [1.0, 1.1, 1.3, 3.0], 1.0, margin=0.25) == 2
    assert degraded_level([8, 4], [1.0, 1.2], 1.0, margin=0.25) is None
    assert degraded_level([8, 4], [None, 2.0], 1.0, margin=0.25) == 1
    with pytest.raises(ValueError):
        degraded_level([8, 4], [1.0], 1.0, margin=0.25)


def test_first_crossing_interpolates_between_levels():
    level, censored = first_crossing([0.1, 0.2, 0.4], [1.0, 2.0, 4.0], 3.0)
    assert (level, censored) == (pytest.approx(0.3), False)


def test_first_crossing_from_clean_and_censored():
    # the first level already crosses: interpolate from strength 0 with the clean score
    assert first_crossing([0.1, 0.2], [3.0, 5.0], 2.0, clean=1.0) == (pytest.approx(0.05), False)
    assert first_crossing([0.1, 0.2], [3.0, 5.0], 2.0) == (0.1, False)
    # never crossing: the largest level, flagged as a lower bound
    assert first_crossing([0.1, 0.2], [1.0, 1.5], 2.0) == (0.2, True)
