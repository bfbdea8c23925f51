"""flowc.testing."""
