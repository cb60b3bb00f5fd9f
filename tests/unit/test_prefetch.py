"""The prefetch window follows task length: deeper for short tasks, the multiplier for long."""

from __future__ import annotations

from kombu.common import QoS

from taskq.worker.prefetch import AdaptivePrefetch, PrefetchRule

# 2 processes, multiplier 4, batches of 16: at most 64 messages.
RULE = PrefetchRule(base=8, processes=2, ceiling=64, seconds=0.1)


def run(prefetch: AdaptivePrefetch, seconds: float, times: int = 200) -> int:
    for _ in range(times):
        prefetch.observe(seconds)
    return RULE.base + prefetch.extra


def test_short_tasks_deepen_the_window_up_to_two_batches_per_process() -> None:
    prefetch = AdaptivePrefetch(RULE)
    assert prefetch.extra == 0  # nothing known yet: the multiplier alone
    assert run(prefetch, 0.0002) == 64  # 0.1 s would be 1,000 tasks: capped
    assert run(prefetch, 0.005) == 32  # 0.1 s / 5 ms x 2 processes = 40, down to 32
    assert run(prefetch, 0.02) == 8  # 10 tasks: within the multiplier's 8 (+ 2)
    assert run(prefetch, 2.0) == 8  # long tasks: the multiplier alone


def test_the_window_moves_only_on_doubling() -> None:
    prefetch = AdaptivePrefetch(RULE)
    run(prefetch, 0.005)
    seen = {RULE.base + prefetch.extra}
    for runtime in (0.0045, 0.0055, 0.006, 0.0042):  # wobbles of 20%
        prefetch.observe(runtime)
        seen.add(RULE.base + prefetch.extra)
    assert seen == {32}


def test_big_messages_limit_the_deeper_window() -> None:
    prefetch = AdaptivePrefetch(RULE)
    for _ in range(200):
        prefetch.observe(0.0002, 1024 * 1024)  # short tasks, 1 MB messages
    assert RULE.base + prefetch.extra == 16  # 8 MB of extra messages: 8 more, down to 16
    for _ in range(200):
        prefetch.observe(0.0002, 100)
    assert RULE.base + prefetch.extra == 64


def test_zero_seconds_or_no_batches_keep_the_multiplier() -> None:
    off = AdaptivePrefetch(PrefetchRule(base=8, processes=2, ceiling=64, seconds=0.0))
    assert run(off, 0.0001) == 8
    solo = AdaptivePrefetch(PrefetchRule(base=4, processes=1, ceiling=2, seconds=0.1))
    run(solo, 0.0001)
    assert solo.extra == 0  # solo and threads: batches of one, nothing to deepen for


def test_apply_moves_a_kombu_qos_by_the_change() -> None:
    sent: list[int] = []
    qos = QoS(lambda prefetch_count: sent.append(prefetch_count), RULE.base)
    qos.update()
    prefetch = AdaptivePrefetch(RULE)
    before = prefetch.extra
    prefetch.observe(0.0002)
    prefetch.apply(qos, before)
    qos.update()
    before = prefetch.extra
    for _ in range(200):
        prefetch.observe(1.0)
    prefetch.apply(qos, before)
    qos.update()
    assert sent == [8, 64, 8]
