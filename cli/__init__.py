"""Thin click commands over the library functions. Nothing imports cli."""
