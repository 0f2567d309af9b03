"""A plain script (a job, a cron task) that records audit events with `auditor.record(...)`; run by the reliability
tests as ``python -m tests.apps.record_script MODE ...`` with the environment of `reliability_app.make_auditor`.

It speaks a line protocol on stdout, flushed line by line so that the test can read it even after a SIGKILL:
``owner <lease owner id>`` once the outbox is open, ``recorded <target id>`` right after each `record()` returned
(what the app believes it recorded: the hand-off window is measured against it), ``flushed <True|False>``,
``child-exit <code>``, ``done``.

Modes:
- ``stream``: record `--count` events (`-1`: until killed) at `--rate` per second, wait `--linger` seconds, then
  `--then` flush / exit (return: the atexit hook is all there is) / hang.
- ``exit``: record, then leave through `sys.exit()`, by falling off the end, or by an uncaught exception, with no
  explicit flush (the atexit hook is all there is).
- ``fork``: record in the parent, fork a `multiprocessing` child while other threads hold the dispatcher's locks;
  the child records and flushes its own events.
- ``loop``: drive the FastAPI app through `httpx.ASGITransport` inside `asyncio.run()` in a thread, let that loop
  close, then flush.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import multiprocessing
import os
import sys
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from centure_audit_middleware import Auditor, Target
from centure_audit_middleware.delivery.outbox import Outbox

from .reliability_app import ACTION, ACTOR, ORG, make_auditor


def say(*words: object) -> None:
    print(*words, flush=True)


def auditor_or_exit() -> Auditor:
    auditor = make_auditor()
    if auditor is None:
        raise SystemExit("record_script needs an auditor (RELIABILITY_AUDIT is 0)")
    # Opening the outbox here (not lazily at the first commit) makes "owner" mean "the file reopened cleanly".
    say("owner", auditor.dispatcher.outbox.owner)
    return auditor


def record(auditor: Auditor, target: str) -> None:
    auditor.record(ACTION, actor=ACTOR, organization=ORG, targets=[Target("item", id=target)])
    say("recorded", target)


def stream(args: argparse.Namespace) -> None:
    auditor = auditor_or_exit()
    started = time.monotonic()
    i = 0
    while args.count < 0 or i < args.count:
        record(auditor, f"{args.prefix}-{i}")
        i += 1
        # Paced against the start, not the previous event: a slow print doesn't lower the rate.
        time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
    time.sleep(args.linger)  # e.g. until the sender has claimed what was recorded and is sending it
    if args.then == "flush":
        say("flushed", auditor.flush(args.flush_timeout))
    elif args.then == "hang":
        say("done")
        threading.Event().wait()
    say("done")


def exit_script(args: argparse.Namespace) -> None:
    auditor = auditor_or_exit()
    for i in range(args.count):
        record(auditor, f"{args.prefix}-{i}")
    say("done")
    if args.how == "sys_exit":
        sys.exit(3)
    if args.how == "exception":
        raise RuntimeError("the job failed after recording")
    # "fall_off": return to the interpreter, which exits normally.


def _child(app: Any, prefix: str, count: int, flush_timeout: float) -> None:
    from centure_audit_middleware.auditor import default_auditor

    # The module-level state the child inherited: the auditor the parent created, and its dispatcher.
    auditor = default_auditor()
    # Requests through the app (their events are enriched: user agent, geo) and ad-hoc records.
    asyncio.run(_post(app, [f"{prefix}-child-request-{i}" for i in range(count)]))
    for i in range(count):
        record(auditor, f"{prefix}-child-{i}")
    flushed = auditor.flush(flush_timeout)
    say("child-flushed", flushed)
    if not flushed:
        faulthandler.dump_traceback(all_threads=True)  # where the child's pipeline is stuck, for the test's report
    # multiprocessing ends a forked child with os._exit(): no atexit hooks, so a job must flush itself.
    sys.exit(0 if flushed else 1)


async def _post(app: Any, targets: list[str], route: str = "events") -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for target in targets:
            response = await client.post(f"/{route}/{target}", headers={"user-agent": "record-script/1.0"})
            response.raise_for_status()
            say("recorded", target)


def fork(args: argparse.Namespace) -> None:
    from .reliability_app import create_fastapi_app

    auditor = auditor_or_exit()
    held = threading.Event()
    enrich_held = threading.Event()
    in_transaction = threading.Event()

    def hold_enrich_lock() -> None:
        # As the enrichers' warm-up thread does while it loads the parsers (~0.3 s, started by install()): held
        # from before install() until well after the fork, so the child inherits it held and `_enrich_ready` false.
        with auditor._enrich_lock:
            enrich_held.set()
            time.sleep(2.0)

    warm_up = threading.Thread(target=hold_enrich_lock, daemon=True)
    warm_up.start()
    enrich_held.wait(5)
    app = create_fastapi_app(auditor)  # installing starts the dispatcher (and a warm-up thread, blocked here)
    dispatcher = auditor.dispatcher
    outbox = dispatcher.outbox
    assert isinstance(outbox, Outbox)  # this mode is about SQLite's in-process lock bookkeeping

    # Every other lock a thread of the delivery path may hold at any moment: the dispatcher's, the outbox's (new
    # connections) and each sink's (e.g. WorkOSSink's, held while a process's first send builds its client).
    locks: list[AbstractContextManager[Any]] = [dispatcher._lock, dispatcher._committed, outbox._lock]
    locks += [sink._lock for sink in auditor.sinks if hasattr(sink, "_lock")]

    def hold_locks() -> None:
        # Another thread of the parent holds them when the main thread forks: the child inherits them locked, owned
        # by a thread that does not exist there. Released a second later, by this thread, as a busy dispatcher
        # would (a fork hook may also make the fork wait for them: both are fine).
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            held.set()
            time.sleep(1.0)

    def hold_transaction() -> None:
        # An outbox write transaction in progress (a group commit or a claim, fsync included) when the main thread
        # forks. SQLite keeps its lock bookkeeping in process memory: a child forked mid-transaction inherits a write
        # lock that no thread of its own will ever release.
        with outbox._transaction():
            in_transaction.set()
            time.sleep(0.5)

    # Some of the parent's events are committed and on their way; the last ones are still in its queue at the fork.
    for i in range(args.count):
        record(auditor, f"{args.prefix}-parent-{i}")
    time.sleep(0.2)
    writer = threading.Thread(target=hold_transaction, daemon=True)
    writer.start()
    in_transaction.wait(5)  # first: the transaction needs the outbox's connection lock that `holder` takes
    holder = threading.Thread(target=hold_locks, daemon=True)
    holder.start()
    held.wait(5)
    for i in range(args.count, 2 * args.count):
        record(auditor, f"{args.prefix}-parent-{i}")
    child = multiprocessing.get_context("fork").Process(
        target=_child, args=(app, args.prefix, args.count, args.flush_timeout), daemon=False
    )
    child.start()
    for thread in (holder, writer, warm_up):
        thread.join(5)
    child.join(args.flush_timeout + 10)
    say("child-exit", child.exitcode)
    if child.exitcode is None:
        child.kill()
        child.join()
    say("flushed", auditor.flush(args.flush_timeout))
    say("done")


def loop(args: argparse.Namespace) -> None:
    from . import reliability_app

    app = reliability_app.create_fastapi_app()
    from centure_audit_middleware.auditor import default_auditor

    auditor = default_auditor()
    say("owner", auditor.dispatcher.outbox.owner)

    async def drive() -> None:
        # Async views run on this loop; sync views in the thread pool that this loop owns.
        for route in ("events", "sync-events"):
            await _post(app, [f"{args.prefix}-{route}-{i}" for i in range(args.count)], route)

    def run_loop() -> None:
        asyncio.run(drive())  # creates the loop, then closes it (and its default executor) on the way out

    runner = threading.Thread(target=run_loop)
    runner.start()
    runner.join()
    say("loop-closed")
    # Let the dispatcher work with no loop around (anything tied to the dead loop would fail now), and record once
    # more from a thread that never had a loop.
    time.sleep(0.3)
    record(auditor, f"{args.prefix}-after-loop")
    say("flushed", auditor.flush(args.flush_timeout))
    say("done")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["stream", "exit", "fork", "loop"])
    parser.add_argument("--prefix", default=f"p{os.getpid()}")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--then", choices=["flush", "exit", "hang"], default="flush")
    parser.add_argument("--how", choices=["sys_exit", "fall_off", "exception"], default="sys_exit")
    parser.add_argument("--flush-timeout", type=float, default=10.0)
    parser.add_argument("--linger", type=float, default=0.0, help="stream: seconds to wait before --then")
    args = parser.parse_args(argv)
    {"stream": stream, "exit": exit_script, "fork": fork, "loop": loop}[args.mode](args)


if __name__ == "__main__":
    main()
