"""Reports for the operator: what the rules cost (this package grows with settlement)."""
