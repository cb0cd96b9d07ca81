"""The pure forwarding core: frame checks, the MAC table, the hub/switch decision and the
pipeline that runs it (``fabric.py``, ``pipeline.py``), its optional stages (VLANs, the guard's
STP and storm control, capture, impairment) and their models.

Nothing in this package touches a socket or reads a clock; time is passed in (or asked of a
``timers.Timers`` the caller provides). It runs wherever the data plane runs.
"""
