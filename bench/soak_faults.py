"""The soak's faults, every ``--fault-interval`` seconds in turn: SIGTERM an instance, restart the
broker, SIGKILL an instance — each instance started again, and the fault logged with its downtime.
"""

from __future__ import annotations

import asyncio
import time

from bench.soak_instances import Instance
from bench.soak_state import SoakState, say

FAULTS = ("sigterm", "broker", "sigkill")


class SoakFaults(SoakState):
    """The fault loop of ``bench.soak.Soak``."""

    async def _faults_until(self, end: float) -> None:
        turn = instance_faults = 0
        while True:
            next_fault = time.monotonic() + self.options.fault_interval
            if next_fault >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return
            await asyncio.sleep(next_fault - time.monotonic())
            kind = FAULTS[turn % len(FAULTS)]
            turn += 1
            # a, b, b, a, a, b, …: each instance gets both SIGTERM and SIGKILL in turn.
            instance = self.instances[(instance_faults + instance_faults // 2) % len(self.instances)]
            if kind != "broker":
                instance_faults += 1
            started = time.monotonic()
            if kind == "broker":
                await asyncio.to_thread(self.broker.stop)
                await asyncio.to_thread(self.broker.start)
                target = "broker"
            elif kind == "sigterm":
                await instance.terminate()
                await self._restart(instance)
                target = instance.name
            else:
                await instance.kill()
                await self._restart(instance)
                target = instance.name
            took = time.monotonic() - started
            self.faults[kind] += 1
            self.fault_log.append(
                {
                    "at": round(started - self.started, 1),
                    "fault": kind,
                    "target": target,
                    "seconds": round(took, 1),
                }
            )
            say(f"soak: {self.elapsed():7.0f} s  fault {kind} on {target}, back after {took:.1f} s")

    async def _restart(self, instance: Instance) -> None:
        for attempt in range(1, 6):
            try:
                await instance.start()
                return
            except RuntimeError as error:
                say(f"soak: instance {instance.name} did not come back (attempt {attempt}): {error}")
                if instance.child is not None:
                    await instance.child.stop(2.0)
                await asyncio.sleep(5.0)
        raise RuntimeError(f"instance {instance.name} could not be restarted")
