"""Jinja2 templates of generated files, shipped as package data."""
