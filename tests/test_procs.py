"""``liangcao.procs``: children that die with their parent."""

from __future__ import annotations

import os
import signal

from liangcao.procs import die_with_parent


def test_a_child_whose_parent_died_before_the_death_signal_was_set_goes_at_once() -> None:
    """``PR_SET_PDEATHSIG`` is set after the fork: a parent that died in between would never send the
    signal, and the child would outlive it (found attacking the surge's real-time load generators). The
    preexec checks that its parent is still the one that made it, and goes if not."""
    pre = die_with_parent(signal.SIGKILL)  # made here: this process is the parent it expects
    child = os.fork()
    if child == 0:  # pragma: no cover (the forked child)
        try:
            pre()  # the expected parent is alive: nothing happens
            grandchild = os.fork()
            if grandchild == 0:
                pre()  # its parent is not the one the preexec was made for: it goes
                os._exit(0)
            _, status = os.waitpid(grandchild, 0)
            os._exit(3 if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else 4)
        except BaseException:
            os._exit(5)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, status
