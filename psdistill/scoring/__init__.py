"""Scorers: the one interface (api), the scorer folder and its student, the registry behind load_scorer."""
