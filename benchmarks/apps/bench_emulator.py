"""The WorkOS emulator in its own process, for benchmarks that must not pay its CPU in the measured process.

    python benchmarks/apps/bench_emulator.py [--org ORG_ID]

Prints one JSON line `{"port": N, "url": ..., "api_key": ...}`, then answers one JSON line per command read from
stdin: `count` (committed events, distinct idempotency keys, and this process's CPU seconds), `reset`, `quit`.
It is `centure-audit emulator` plus those answers (the CLI can't tell a benchmark what it committed), and records
no request log (`max_requests_recorded=0`) so a long run keeps only the events.

`EmulatorProcess` is the parent's side: it starts the script (optionally under `taskset`) and talks to it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

API_KEY = "sk_test_emulator"
SCRIPT = Path(__file__).resolve()


def serve(organizations: Sequence[str]) -> int:
    from centure_audit_middleware.testing import WorkOSEmulator

    emulator = WorkOSEmulator(organizations=organizations, api_key=API_KEY, max_requests_recorded=0).start()
    print(json.dumps({"port": emulator.port, "url": emulator.url, "api_key": API_KEY}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            reply: dict[str, Any] = {"ok": True}
            if command == "count":
                counts = emulator.count_by_key()
                reply.update(events=sum(counts.values()), keys=len(counts), cpu=time.process_time())
            elif command == "reset":
                emulator.reset()
            elif command == "quit":
                break
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        emulator.stop()
    return 0


class EmulatorProcess:
    """The emulator running in a child process; `close()` ends it (also on error: use it in a `try/finally`)."""

    def __init__(self, organizations: Sequence[str], *, cpus: str | None = None) -> None:
        argv = [sys.executable, str(SCRIPT)]
        for org in organizations:
            argv += ["--org", org]
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            hello = self._read()
        except BaseException:
            self.close()
            raise
        self.url: str = hello["url"]
        self.api_key: str = hello["api_key"]
        self.pid = self.proc.pid

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process exited ({self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def count(self) -> int:
        return int(self.command("count")["events"])

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.command("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--org", dest="organizations", action="append", help="an organization it knows (repeatable)")
    args = parser.parse_args(argv)
    return serve(args.organizations or ["org_01BENCH"])


if __name__ == "__main__":
    raise SystemExit(main())
