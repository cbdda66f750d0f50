"""How the Quality panel answers the App's events: few redraws.

FiftyOne's panel path sends one ``patch_panel_state`` per state write and the panel's
whole layout after every event. The App redraws every Plotly chart for each of them:
on 2 CPU cores a page with the panel open spent 80-100 % of a core in Plotly with
only its 3-second poll and the App's view events coming in, and clicks elsewhere in
the App waited for it. Here an event's state writes go out as one patch holding only
what changed, and a poll that found nothing new sends nothing at all.
"""

from __future__ import annotations

from fiftyone.operators.panel import PanelRefBase, PanelRefState

# the events answered with a layout only when they changed something
QUIET_WHEN_UNCHANGED = frozenset({"poll", "on_change_current_sample"})
_NOT_EVENTS = (None, "on_startup")


class BatchedPanelState(PanelRefState):
    """Panel state whose writes are kept until :meth:`flush`, which sends the changed
    ones in one patch. Reads see the writes at once."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self._changed: dict = {}

    def set(self, key, value=None) -> None:
        updates = key if isinstance(key, dict) else {key: value}
        for name, new in updates.items():
            if name in self._changed or self.get(name) != new:
                self._changed[name] = new
        PanelRefBase.set(self, updates)

    def flush(self) -> bool:
        """Sends the writes kept so far, if any changed a value; True if some did."""
        changed, self._changed = self._changed, {}
        if changed:
            self._ctx.ops.patch_panel_state(changed)
        return bool(changed)


def run_panel_event(panel, ctx):
    """Runs the panel method the App asked for (``ctx.params['__method__']``), then sends
    its state changes in one patch and, unless a quiet event changed nothing, the layout.

    Returns the method's result.
    """
    method_name = ctx.params.get("__method__")
    state = BatchedPanelState(ctx)
    ctx.panel._state = state  # where FiftyOne 1.22's PanelRef keeps the state it hands out
    ctx.event_args = ctx.params.get("event_args", {})
    result = getattr(panel, method_name)(ctx) if hasattr(panel, method_name) else None
    # a quiet event that redraws anything writes state too (the view it drew for, the
    # signature, whether a sample is open)
    if state.flush() or method_name not in QUIET_WHEN_UNCHANGED:
        ctx.ops.show_panel_output(panel.render(ctx))
    return result


def is_panel_event(ctx) -> bool:
    """Whether the App called the panel for an event (not to register it)."""
    return ctx.params.get("__method__") not in _NOT_EVENTS
