"""The CTR serving store: the PostgreSQL tables real-time and batch CTR figures are written to."""
