"""selfcheck_fake_broker.py for the cluster harness self-check (test_cluster_harness.py), with
a main thread that wakes every 50 ms.

Why: after SIGSTOP + SIGCONT, the kernel may hand a process-directed SIGTERM to any thread
(the main thread can still have a pending-signal flag set until it is scheduled again). Python
runs signal handlers only on the main thread, so a main thread blocked in Event.wait() without a
timeout would never see a SIGTERM delivered to a server thread. The real broker (tokio) is
woken through a self-pipe and does not have this problem.
"""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class _PollingEvent(threading.Event):
    def wait(self, timeout=None):
        if timeout is not None:
            return super().wait(timeout)
        while not super().wait(0.05):
            pass
        return True


threading.Event = _PollingEvent

import selfcheck_fake_broker  # noqa: E402

if __name__ == "__main__":
    selfcheck_fake_broker.main()
