"""Partners' prices: what each pays per point issued and is paid per point accepted, and its
fees, effective-dated (the settlement values postings with the price they recorded)."""
