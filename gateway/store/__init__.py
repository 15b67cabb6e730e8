"""Durable storage: accounts, keys, request records, enforcement actions and the audit log."""
