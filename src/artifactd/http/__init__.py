"""HTTP layer: parse, authenticate, call one service function, shape the response."""
