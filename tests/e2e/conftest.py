"""End-to-end fixtures live in tests/conftest.py (the drills use them too)."""
