"""``selfheal.once.Once``: what a worker process has already counted (workflows/metrics.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from selfheal.once import Once


def test_a_key_is_first_once_and_forgotten_only_past_the_bound():
    once = Once(keep=3)
    assert [once.first(k) for k in ("a", "a", "b", "c", "b")] == [True, False, True, True, False]
    assert once.first("d") and len(once) == 3  # "a", the oldest, made room
    assert once.first("a")                   # so it counts again: the bound is what it costs
    assert not once.first("d")


def test_threads_asking_about_the_same_keys_get_one_true_each():
    once = Once(keep=10_000)
    keys = [("run", i % 500) for i in range(20_000)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(once.first, keys))
    assert sum(answers) == 500
