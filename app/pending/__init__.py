"""Pending points: a purchase's points wait out the partner's return window (service.py)."""
