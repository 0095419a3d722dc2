"""``%cake`` / ``%%cake``: the notebook front door (``%cake help`` shows the usage).

CakeMagics only wires IPython to the pieces, which are kept apart so that reading a line never does
anything and doing never re-reads a line:

    arguments.py  reading lines: the %%cake magic_arguments, `%cake <command>` splitting, `use` flags
    context.py    the state one kernel's magics share: the engine, the current session, starting one
    cell.py       running a %%cake cell          follow.py     relaying a run's outputs until it ends
    commands.py   the line sub-commands          variables.py  push / pull of notebook variables
"""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from jupyter_cake.magics.arguments import cell_arguments, parse_cell_line, split_command
from jupyter_cake.magics.cell import run_cell
from jupyter_cake.magics.commands import run_command
from jupyter_cake.magics.context import Context
from jupyter_cake.manager import Handle

__all__ = ["CakeMagics"]


@magics_class
class CakeMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.context = Context(shell)

    @property
    def current(self) -> Handle | None:
        """The current session (what `%cake use` chose), or None."""
        return self.context.current

    @current.setter
    def current(self, handle: Handle | None) -> None:
        self.context.current = handle

    @cell_arguments
    @line_cell_magic
    def cake(self, line: str, cell: str | None = None) -> Any:
        """Run a cell on the current Cake session, or manage sessions (`%cake help`)."""
        if cell is not None:
            return run_cell(self.context, parse_cell_line(self.cake.parser, line), cell)
        command, args = split_command(line)
        return run_command(self.context, command, args)
