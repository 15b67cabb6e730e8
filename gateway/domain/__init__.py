"""The plain types and pure functions every feature shares: tiers and their limits, account
statuses and the actions between them, admin roles, the API-key format. Stdlib and pydantic
only; nothing here imports another gateway package, so settings, the store, auth and accounts
all depend on it and never on each other in a circle."""
