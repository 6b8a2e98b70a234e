"""Coalition settlement: periods, statements per partner, payments (service.py)."""
