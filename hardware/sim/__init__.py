"""Simulators for every device in ``hardware``, and the pytest fixtures that swap them in.

``SimFactory`` (``hardware.sim.factory``) makes them all for one board; see
docs/hardware.md for what each one produces.
"""
