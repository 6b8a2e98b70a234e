"""Points expiry: lots, what is due, the breakage postings, and the run (see policy.py)."""
