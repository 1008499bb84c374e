"""The micro-batcher in-process: merging, isolation of a failing request, overload, shutdown."""

import asyncio
import threading
import time

import pytest

from rankstill.server.batcher import MicroBatcher
from rankstill.server.errors import BackendUnavailable, Overloaded


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Recorder:
    """run_batch that doubles numbers, records each batch, fails on "bad", and can be held."""

    def __init__(self):
        self.batches: list[list] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list) -> list:
        self.release.wait(10)
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        return [item * 2 for item in items]


def batcher(run, max_batch_size=100, max_queued=1000, on_batch=None):
    size = lambda item: 1 if isinstance(item, str) else item  # noqa: E731
    return MicroBatcher(list, run, size, max_batch_size, max_queued, **({"on_batch": on_batch} if on_batch else {}))


@pytest.mark.anyio
async def test_requests_queued_while_the_model_runs_share_the_next_run():
    run, observed = Recorder(), []
    queue = batcher(run, on_batch=lambda items, seconds: observed.append((list(items), seconds)))
    queue.start()
    run.release.clear()
    first = asyncio.create_task(queue.submit(1))
    await asyncio.sleep(0.05)  # the first run is now in progress (held)
    rest = [asyncio.create_task(queue.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.05)
    assert queue.queued == 1 + 2 + 3 + 4
    run.release.set()
    assert await first == 2 and [await task for task in rest] == [4, 6, 8]
    assert sorted(run.batches) == [[1], [2, 3, 4]]  # (in the model together: either may end first)
    assert sorted(items for items, _ in observed) == [[1], [2, 3, 4]] and all(s >= 0 for _, s in observed)
    assert queue.queued == 0
    await queue.stop()


@pytest.mark.anyio
async def test_the_next_batch_goes_to_the_model_before_the_last_one_ends():
    started, release, observed = [], threading.Event(), []

    def run(items):
        started.append((list(items), time.perf_counter()))
        release.wait(10)
        return [item * 2 for item in items]

    queue = batcher(run, on_batch=lambda items, seconds: observed.append((items[0], seconds)))
    queue.start()
    tasks = []
    for n in (1, 2, 3):
        tasks.append(asyncio.create_task(queue.submit(n)))
        await asyncio.sleep(0.1)
    assert [items for items, _ in started] == [[1], [2]]  # two batches in the model at once; the third waits
    release.set()
    assert [await task for task in tasks[:2]] == [2, 4]
    both_ran_for = time.perf_counter() - started[0][1]
    assert await tasks[2] == 6 and [items for items, _ in started] == [[1], [2], [3]]
    # the model's time is counted once where runs overlap (both held ≥ 0.1 s together)
    seconds = dict(observed)
    assert 0 < seconds[1] + seconds[2] <= both_ran_for
    await queue.stop()


@pytest.mark.anyio
async def test_batches_respect_the_size_bound():
    run = Recorder()
    queue = batcher(run, max_batch_size=5)
    queue.start()
    run.release.clear()
    tasks = [asyncio.create_task(queue.submit(n)) for n in (1, 3, 2, 4, 1)]
    await asyncio.sleep(0.05)
    run.release.set()
    await asyncio.gather(*tasks)
    assert all(sum(batch) <= 5 for batch in run.batches)
    assert sorted(n for batch in run.batches for n in batch) == [1, 1, 2, 3, 4]
    await queue.stop()


@pytest.mark.anyio
async def test_a_failing_request_fails_alone_and_its_batch_mates_are_answered():
    run = Recorder()
    queue = batcher(run)
    queue.start()
    run.release.clear()
    holder = asyncio.create_task(queue.submit(1))
    await asyncio.sleep(0.05)
    good_before, bad, good_after = (asyncio.create_task(queue.submit(x)) for x in ("a", "bad", "c"))
    await asyncio.sleep(0.05)
    run.release.set()
    assert await holder == 2
    assert await good_before == "aa" and await good_after == "cc"
    with pytest.raises(ValueError, match="bad"):
        await bad
    # tried together first, then one by one (the held first batch ended meanwhile, in its own thread)
    assert [batch for batch in run.batches if batch != [1]] == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert await queue.submit(5) == 10  # the worker goes on
    await queue.stop()


@pytest.mark.anyio
async def test_a_backend_failure_is_not_retried_per_request():
    calls = []

    def down(items):
        calls.append(list(items))
        raise BackendUnavailable("Triton is down")

    queue = batcher(down)  # noqa
    queue.start()
    results = await asyncio.gather(*(queue.submit(n) for n in (1, 2, 3)), return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert sum(len(batch) for batch in calls) == 3  # every request tried once, none again alone
    await queue.stop()


@pytest.mark.anyio
async def test_overflow_is_refused_at_once_and_accepted_work_is_answered():
    run = Recorder()
    queue = batcher(run, max_queued=10)
    queue.start()
    run.release.clear()
    accepted = [asyncio.create_task(queue.submit(n)) for n in (4, 4)]
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded):
        await queue.submit(3)
    run.release.set()
    assert [await task for task in accepted] == [8, 8]
    await queue.stop()


@pytest.mark.anyio
async def test_a_request_larger_than_the_queue_is_accepted_when_the_queue_is_empty():
    queue = batcher(Recorder(), max_queued=10)
    queue.start()
    assert await queue.submit(50) == 100
    await queue.stop()


@pytest.mark.anyio
async def test_stop_answers_everything_accepted_first():
    run = Recorder()
    queue = batcher(run)
    queue.start()
    run.release.clear()
    tasks = [asyncio.create_task(queue.submit(n)) for n in range(1, 6)]
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    run.release.set()
    await stopping
    assert [task.result() for task in tasks] == [2, 4, 6, 8, 10]


@pytest.mark.anyio
async def test_a_client_that_went_away_does_not_stop_the_worker():
    run = Recorder()
    queue = batcher(run)
    queue.start()
    run.release.clear()
    abandoned = asyncio.create_task(queue.submit(1))
    await asyncio.sleep(0.05)
    abandoned.cancel()
    run.release.set()
    assert await queue.submit(2) == 4
    await queue.stop()


@pytest.mark.anyio
async def test_a_tiny_run_does_not_inflate_the_expected_wait():
    """Each run costs a fixed 50 ms plus 1 ms per unit: a one-unit run (a warm-up, a health probe) costs
    51 ms per unit, but the estimate weighs runs by their size, so admission still sees about 1.5 ms."""
    import time

    def run(items: list) -> list:
        time.sleep(0.05 + 0.001 * sum(items))
        return items

    queue = batcher(run, max_batch_size=1000)
    queue.start()
    await queue.submit(100)
    big_run_rate = queue.seconds_per_unit
    assert 0.0015 <= big_run_rate < 0.003
    await queue.submit(1)
    assert queue.seconds_per_unit < 1.2 * big_run_rate
    await queue.stop()


@pytest.mark.anyio
async def test_an_idle_model_assembles_its_batch_itself_and_a_busy_one_gets_it_assembled_beside_it():
    run, assembled_on = Recorder(), {}

    def prepare(items):
        assembled_on.update(dict.fromkeys(items, threading.current_thread().name.split("_")[0]))
        return list(items)

    queue = MicroBatcher(prepare, run, lambda item: item, 100, 1000)
    queue.start()
    assert await queue.submit(1) == 2  # idle: assembly and run in one hop, on the inference thread
    run.release.clear()
    # two requests too large to share a batch: the second is assembled while the first is in the model
    first, second = asyncio.create_task(queue.submit(60)), asyncio.create_task(queue.submit(70))
    await asyncio.sleep(0.05)
    run.release.set()
    assert (await first, await second) == (120, 140)
    assert assembled_on == {1: "inference", 60: "inference", 70: "assembly"}
    await queue.stop()
