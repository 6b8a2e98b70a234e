"""Earning rules: what a purchase earns and why. Pure functions (earn.py, tiers.py) that the
posting engine applies, and the operator API that versions the rules (router.py)."""
