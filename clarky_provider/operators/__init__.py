"""Operators that land Clarky records in warehouses and object storage."""
