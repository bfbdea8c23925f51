"""flowc.ir."""
