# Tick stamps that survive the wrap, and deadlines of periodic work. On the ESP32 time.ticks_ms()
# wraps at 2**30 ms (12.4 days) and ticks_diff() is right only within 2**29 ms (6.2 days): a stamp
# older than that reads as in the future, so a relay that held its state a week would refuse every
# change. Every stamp the node keeps for longer than a moment goes through age() once a second
# (app.Node.age_stamps, from the watchdog task, which runs or the node resets): a stamp older than
# _OLD_MS is moved forward to exactly _OLD_MS ago, so it never gets near 2**29 and still reads as
# "longer ago than any limit". Every duration compared with a stamp is below _OLD_MS (the host's
# board validation checks it).
from micropython import const
from time import ticks_add, ticks_diff

_OLD_MS = const(0x10000000)  # 2**28 ms: 3.1 days


def age(stamp, now):
    if stamp is not None and ticks_diff(now, stamp) > _OLD_MS:
        return ticks_add(now, -_OLD_MS)
    return stamp


def next_due(due, period, now):
    # The deadline one period after due: periodic work on absolute deadlines (ticks_add) keeps
    # its period whatever each run takes, where a sleep of the period after the work would drift
    # by the work's time. A node a whole period behind (a long blocking call, or a jump of the
    # virtual node's ticks) starts again from now instead of running the missed periods back to
    # back. period stays below _OLD_MS, so a deadline is always readable with ticks_diff.
    due = ticks_add(due, period)
    if ticks_diff(due, now) <= 0:
        return ticks_add(now, period)
    return due
