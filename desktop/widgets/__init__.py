"""Reusable Tk widgets of the desktop app."""
