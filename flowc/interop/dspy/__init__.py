"""flowc → DSPy: the exported program (codegen.py), its adapter (adapter.py), export and state (export.py)."""
