"""The worker's registry client when Redis goes away and comes back (issue 13, item 5): the
"registry: lost redis" line names hiredis's reason, read before the context is freed (it was
read after: a use-after-free, garbage in the log and a crash under ASan, which .ci/run's
asan-process step runs this against), the worker keeps serving, and it announces itself
again once Redis is back."""
import json
import re

from conftest import Worker, wait_for

# hiredis's own messages for a connection that the server dropped or that failed.
REASON = re.compile(r"registry: lost redis 127\.0\.0\.1:\d+: "
                    r"(Server closed the connection|Connection reset by peer|"
                    r"Resource temporarily unavailable|Broken pipe|Connection refused|"
                    r"no reply)\b")


def key_of(redis):
    keys = [k for k in redis.command("KEYS", "sluice:worker:*").splitlines() if k]
    return keys[0] if keys else None


def test_redis_lost_and_back(procs, logdir, redis):
    w = Worker(procs, logdir, registry=redis.url)
    try:
        wait_for(lambda: key_of(redis) is not None, what="worker announced in redis")
        assert json.loads(redis.command("GET", key_of(redis)))["address"] == w.address

        redis.stop()  # the worker's next refresh (every second) finds the connection gone
        wait_for(lambda: "registry: lost redis" in w.proc.output(), what="lost-redis log line")
        line = next(ln for ln in w.proc.output().splitlines() if "registry: lost redis" in ln)
        assert REASON.search(line), line
        assert w.proc.alive()
        assert w.metric("sluice_worker_ready") == 1

        redis.start()  # same port, empty: the worker comes back by itself (backoff <= 5 s)
        wait_for(lambda: key_of(redis) is not None, 20, "worker announced again")
        assert w.proc.alive()
    finally:
        w.proc.stop()
