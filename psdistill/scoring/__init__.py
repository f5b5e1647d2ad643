"""Scorers: the one interface (api), the scorer folder's format (spec), how a score is read (readout), the
trained student and the zero-shot teacher, CSV batch scoring (batch), merged export (merge), and the
registry behind load_scorer."""
