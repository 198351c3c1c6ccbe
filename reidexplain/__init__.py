"""reidexplain."""
