"""Credentials: accounts and API tokens, repo tokens, dashboard sessions."""
