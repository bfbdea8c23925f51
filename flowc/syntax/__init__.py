"""The `.flow` front end: lark grammar → canonical spec, and the canonical printer back."""
