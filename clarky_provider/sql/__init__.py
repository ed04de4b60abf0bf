"""Warehouse side of a load: table layout and SQL dialects."""
