"""``python -m liangcao.cli``: the same as the ``liangcao`` command."""

from liangcao.cli import main

main()
