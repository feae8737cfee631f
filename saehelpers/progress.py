"""Progress bars that survive a saved notebook.

`tqdm.auto` draws an ipywidgets bar in Jupyter: a reopened notebook shows "Error displaying
widget: model not found" in its place, and plain tqdm writes to stderr (a pink block). Inside a
kernel `progress_bar` draws tqdm's usual text line as plain output and redraws it in place
through an IPython display handle, so the final line stays in the saved notebook; elsewhere
it is plain tqdm on stderr.
"""

import sys

from tqdm.std import tqdm as std_tqdm


def progress_bar(iterable=None, **tqdm_kwargs) -> std_tqdm:
    """A tqdm bar over `iterable` (or a manual one: `bar = progress_bar(total=n); bar.update()`).

    Takes tqdm's arguments. In a Jupyter kernel the bar is a plain-text output updated in place,
    unless `file=` is given: an explicit stream gets plain tqdm everywhere.
    """
    if _in_kernel() and tqdm_kwargs.get("file") is None:
        return _DisplayedBar(iterable, **tqdm_kwargs)
    return std_tqdm(iterable, **tqdm_kwargs)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient/nbmake, Colab, VS Code), not in terminal IPython."""
    if "IPython" not in sys.modules:  # a kernel has imported it; scripts need not pay for the import
        return False
    try:
        from ipykernel.zmqshell import ZMQInteractiveShell
    except ImportError:
        return False
    return isinstance(sys.modules["IPython"].get_ipython(), ZMQInteractiveShell)


class _Nowhere:
    """The stream tqdm writes its cursor moves and newlines to; the bar itself goes to the display."""

    encoding = "utf-8"  # so tqdm draws the smooth unicode bar, which notebooks show fine

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class _DisplayedBar(std_tqdm):
    """tqdm whose line is one `text/plain` output, redrawn at tqdm's usual mininterval."""

    def __init__(self, iterable=None, **tqdm_kwargs):
        self._handle = None  # made at the first draw, so `delay=` still holds the bar back
        super().__init__(iterable, **{**tqdm_kwargs, "file": _Nowhere()})

    def display(self, msg=None, pos=None):
        text = str(self) if msg is None else msg  # close(leave=False) draws "": the output empties
        if self._handle is None:
            if text:
                from IPython.display import display

                self._handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self._handle.update({"text/plain": text}, raw=True)
        return True

    def clear(self, nolock=False):
        """Keep the line: each bar has its own output, so `tqdm.write` need not clear it."""
