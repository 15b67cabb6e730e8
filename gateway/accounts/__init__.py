"""Accounts: their limits and statuses, and the audited operations that change them."""
