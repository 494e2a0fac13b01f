"""Test package (a regular package, so a stray top-level ``tests`` package in site-packages,
such as the one plottable installs, cannot shadow ``tests.conftest``)."""
