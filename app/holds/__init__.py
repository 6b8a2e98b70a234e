"""Holds: value reserved on a card for an order, then captured, voided, or expired."""
