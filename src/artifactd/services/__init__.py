"""The domain rules, written once: names, tokens, repos, limits. Imports only storage and errors."""
