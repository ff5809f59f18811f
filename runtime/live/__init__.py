"""Live mode (``vce-run --follow``): live sources, keeping up, the loop, its status and resume log."""
