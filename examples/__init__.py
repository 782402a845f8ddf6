"""Runnable examples (a package so that a cluster can spawn their actors by import path)."""
